"""Built-in recipes: ``recipes/<task>/<strategy>.yaml``, installed as ``aetnet.recipes``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aetnet.errors import AetnetError


def recipes_dir() -> Path:
    """The folder of built-in recipes."""
    return Path(str(resources.files("aetnet.recipes")))


def list_recipes() -> list[str]:
    """Built-in recipe names, ``<task>/<name>``."""
    root = recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.yaml"))


def find_recipe(recipe: str | Path | None, task: str, strategy: str) -> Path | None:
    """Resolve ``--recipe``: a YAML path, a built-in name, or the default ``<task>/<strategy>``.

    Returns ``None`` when no recipe was asked for and no default exists (dataclass defaults apply).
    """
    task_dir = task.replace("-", "_")
    if recipe is None:
        default = recipes_dir() / task_dir / f"{strategy.replace('-', '_')}.yaml"
        return default if default.is_file() else None
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    name = str(recipe).replace("-", "_")
    for candidate in (recipes_dir() / f"{name}.yaml", recipes_dir() / task_dir / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise AetnetError(
        f"recipe '{recipe}' not found; use a YAML path or one of: {', '.join(list_recipes())}"
    )
