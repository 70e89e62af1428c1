"""One tiny registry type for tasks and tuning strategies.

Names are the keys recipes and the CLI use (``task: funsd``, ``strategy: lora``); registering a name
twice is a bug and raises, and a lookup of an unknown name lists the choices.

A strategy is registered once, with its settings sections (:meth:`StrategyRegistry.add`, the table in
``aetnet/strategies/__init__.py``): the run configuration (:mod:`aetnet.config.settings`) reads the sections from
here, so a new strategy's settings section (``lora:`` in recipes, ``lora.r=4`` on the command line) needs no
edit of the configuration. The registry imports the package of built-in strategies on its first lookup; the
configuration itself never imports a strategy.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aetnet.errors import AetnetError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with helpful errors.

    Args:
        kind: what is registered ("task", "strategy"), used in messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name raises ``KeyError``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises an error listing the choices."""
        try:
            return self._items[name]
        except KeyError:
            raise AetnetError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


class StrategyRegistry(Registry):
    """The tuning strategies, each with the settings sections it reads.

    Args:
        kind: used in messages (``"strategy"``).
        package: imported on the first lookup (``get``, ``names``, ``in``, ``sections``), so the built-in
            strategies are registered whoever asks first.
    """

    def __init__(self, kind: str, package: str | None = None):
        super().__init__(kind)
        self.package = package
        self._sections: dict[str, type] = {}
        self._loaded = package is None

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before the import: the package's own registrations must not recurse
            importlib.import_module(self.package)

    def add(self, name: str, cls: type | str, **sections: type) -> None:
        """Register the strategy ``cls`` as ``name``, with its settings sections.

        Args:
            name: the ``strategy:`` value of recipes and ``--strategy``.
            cls: the strategy class (instantiated without arguments for each run), or ``"module:Class"``,
                imported on the first :meth:`get` of ``name`` (so that reading a configuration imports no model code).
            sections: section name -> settings dataclass (``lora=LoraSettings``); the section is a top-level key of
                recipes and ``config.yaml`` and a ``name.`` prefix of ``key=value`` overrides. Several strategies
                may share a section with the same dataclass (``aet-lora`` reads ``aet`` and ``lora``).

        Raises:
            KeyError: ``name`` is taken, a section is not a dataclass, or a section name is taken by another
                dataclass.
        """
        for section, settings in sections.items():
            if not (isinstance(settings, type) and dataclasses.is_dataclass(settings)):
                raise KeyError(f"{self.kind} '{name}': settings section '{section}' must be a dataclass type")
            if self._sections.get(section, settings) is not settings:
                raise KeyError(f"{self.kind} '{name}': settings section '{section}' is already registered "
                               f"as {self._sections[section].__name__}")
        self.register(name)(cls)
        self._sections.update(sections)

    def sections(self) -> dict[str, type]:
        """Every registered settings section: name -> dataclass, in registration order."""
        self._load()
        return dict(self._sections)

    def get(self, name: str) -> Any:
        """The strategy class registered as ``name`` (imported now when it was registered as ``"module:Class"``)."""
        self._load()
        obj = super().get(name)
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = self._items[name] = getattr(importlib.import_module(module), attr)
        return obj

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)


TASKS: Registry = Registry("task")
STRATEGIES: StrategyRegistry = StrategyRegistry("strategy", package="aetnet.strategies")
