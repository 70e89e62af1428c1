"""One tiny registry type for tasks and tuning strategies.

Names are the keys recipes and the CLI use (``task: funsd``, ``strategy: lora``); registering a name
twice is a bug and raises, and a lookup of an unknown name lists the choices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

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


TASKS: Registry = Registry("task")
STRATEGIES: Registry = Registry("strategy")
