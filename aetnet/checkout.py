"""``aetnet.tasks`` and ``aetnet.recipes`` when aetnet is imported from a source checkout.

The checkout keeps the task adapters and recipes in top-level ``tasks/`` and ``recipes/`` folders, which the
package build installs as ``aetnet.tasks`` and ``aetnet.recipes``. Run from the repository root (``python -m
aetnet ...``, ``torchrun -m aetnet ...``), Python imports the checkout's ``aetnet/`` folder, not the installed
package, and that folder has no ``tasks/`` or ``recipes/`` inside. :func:`map_checkout_folders` then adds an
import finder that answers for exactly those two package names with the checkout's folders (their submodules
are found through the package's ``__path__`` as usual). An installed package, which holds its own
``aetnet/tasks`` and ``aetnet/recipes``, is left alone, and no other import changes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

#: Package name -> the checkout's top-level folder that the build installs as that package.
MAPPED = {"aetnet.tasks": "tasks", "aetnet.recipes": "recipes"}


class CheckoutFolders(importlib.abc.MetaPathFinder):
    """Finds ``aetnet.tasks`` / ``aetnet.recipes`` in a checkout's top-level folders."""

    def __init__(self, folders: dict[str, Path]):
        self.folders = folders

    def find_spec(self, fullname, path=None, target=None):
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(fullname, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def checkout_folders(package_dir: Path) -> dict[str, Path]:
    """The folders to map for the ``aetnet`` package in ``package_dir``: empty for an installed package (it has
    ``tasks/`` and ``recipes/`` inside) or a folder that is not aetnet's checkout (no aetnet ``pyproject.toml``
    beside it)."""
    root = package_dir.parent
    project = root / "pyproject.toml"
    if not project.is_file() or 'name = "aetnet"' not in project.read_text(encoding="utf-8", errors="replace"):
        return {}
    return {name: root / folder for name, folder in MAPPED.items()
            if not (package_dir / name.rsplit(".", 1)[1]).is_dir() and (root / folder / "__init__.py").is_file()}


def map_checkout_folders(init_file: str) -> None:
    """Add the finder for the checkout of the package whose ``__init__.py`` is ``init_file``, once (after the
    standard finders: it only answers what they do not find); nothing for an installed package."""
    folders = checkout_folders(Path(init_file).resolve().parent)
    if folders and not any(isinstance(f, CheckoutFolders) for f in sys.meta_path):
        sys.meta_path.append(CheckoutFolders(folders))
