"""Typed dataclasses from YAML and ``key=value`` text: coercion, unknown keys, overrides, recipe files.

The machinery behind :func:`aetnet.config.settings.resolve_config`, independent of the run's schema: values
are converted to each field's annotated type, an unknown key fails listing the valid ones, and YAML
errors become one sentence with the line and column.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from aetnet.errors import AetnetError


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise AetnetError(f"{key} cannot be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce_value(value, arg, key)
            except AetnetError:
                continue
        raise AetnetError(f"{key}={value!r} does not match {tp}")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise AetnetError(f"{key} must be a list, got {value!r}")
        return [coerce_value(v, args[0] if args else str, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise AetnetError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise AetnetError(f"{key} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise AetnetError(f"{key} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise AetnetError(f"{key} must be a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise naming the setting ``name`` and the valid ``choices`` when ``value`` is not one of them."""
    if value not in choices:
        raise AetnetError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "", fixed: dict[str, Any] | None = None) -> Any:
    """Build the dataclass ``cls`` from a nested dict, coercing each value to its field's type.

    Args:
        cls: the dataclass; fields that are dataclasses are built from nested mappings.
        values: the settings, by field name.
        prefix: dotted path of ``cls`` in the whole config (``"train."``), for error messages.
        fixed: fields passed to ``cls`` as they are (already built), never read from ``values``.

    Raises:
        AetnetError: an unknown key (listing the valid ones), a section that is not a mapping, or a value
            that does not match its field's type.
    """
    fixed = fixed or {}
    types = {name: tp for name, tp in _field_types(cls).items() if name not in fixed}
    kwargs = dict(fixed)
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in types:
            raise AetnetError(
                f"unknown config key '{full}'; valid keys here: {', '.join(sorted(types))}"
            )
        tp = types[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise AetnetError(f"config section '{full}' must be a mapping")
            kwargs[key] = build_dataclass(tp, value, prefix=f"{full}.")
        else:
            kwargs[key] = coerce_value(value, tp, full)
    return cls(**kwargs)


def merge_nested(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, nested mappings merged key by key (neither input changes)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["train.learning_rate=3e-5", "aet.alpha=0"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise AetnetError(f"override '{pair}' is not key=value (for example train.learning_rate=3e-5)")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            problem = yaml_problem(exc, "quote it if it is text")
            raise AetnetError(f"override '{pair}': the value is {problem}") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


YAML_HINT = ("check the indentation there (spaces, not tabs), that each key is followed by ': ', and that "
             "quotes and brackets are closed")


def yaml_problem(exc: Exception, hint: str = YAML_HINT) -> str:
    """One sentence for a YAML parse error: where it is (line and column, 1-based) and what to check."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(exc, "problem", None) or "a syntax error").split())
    return f"not valid YAML{where} ({problem}); {hint}"


def load_recipe_dict(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML file into a dict, with a clear error for bad YAML."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except FileNotFoundError:
        raise AetnetError(f"{path}: recipe file does not exist; list recipes with `aetnet recipes ls`") from None
    except UnicodeDecodeError as exc:
        raise AetnetError(f"{path}: recipe is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise AetnetError(f"{path}: the recipe is {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise AetnetError(f"{path}: a recipe must be a YAML mapping of sections")
    return data
