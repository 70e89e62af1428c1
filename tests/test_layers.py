"""The package layers, read from the source (so a lazy import inside a function counts).

The import graph is built from every ``import`` statement of ``aetnet/`` and of the top-level ``tasks/`` and
``recipes/`` folders (installed as ``aetnet.tasks`` / ``aetnet.recipes``). Importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``, so those count as imported too. The rules:

- each folder imports only the folders below it (:data:`MAY_IMPORT`, the table of docs/contributing.md);
- no loop between the top-level folders;
- no module of ``tasks/`` imports ``aetnet.train``, even through other modules;
- nothing reachable from ``aetnet`` (``import aetnet``, ``aetnet.load``), ``aetnet.predict``, ``aetnet.serve``,
  ``aetnet.export`` or ``aetnet.inference`` imports ``aetnet.train``: a user who only predicts never imports the
  training stack. The one door to training in the public API is :func:`aetnet.finetune` (:data:`TRAINING_DOORS`).

Each rule is run on a planted violation as well (the rules are not vacuous).
"""

import ast
import os
import subprocess
import sys
from collections import defaultdict, deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> the package it is imported as.
PACKAGES = {"aetnet": "aetnet", "tasks": "aetnet.tasks", "recipes": "aetnet.recipes"}
#: Modules at the root of aetnet/ that any folder may import (no aetnet import of their own but errors').
FOUNDATION = ("aetnet.errors", "aetnet.registry", "aetnet.version", "aetnet.threads", "aetnet.metrics", "aetnet.bases")
#: Top-level folder -> the folders it may import (besides itself and :data:`FOUNDATION`).
MAY_IMPORT = {
    "aetnet.data": (),
    "aetnet.config": ("aetnet.data",),
    "aetnet.models": (),
    "aetnet.recipes": (),
    "aetnet.tasks": ("aetnet.config", "aetnet.data", "aetnet.models"),
    "aetnet.strategies": ("aetnet.config", "aetnet.data", "aetnet.models"),
    "aetnet.inference": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies"),
    "aetnet.export": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies",
                      "aetnet.inference"),
    "aetnet.predict": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies",
                       "aetnet.inference"),
    "aetnet.serve": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies",
                     "aetnet.inference", "aetnet.predict"),
    "aetnet.train": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies",
                     "aetnet.inference"),
    "aetnet.compare": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies",
                       "aetnet.inference", "aetnet.export", "aetnet.train"),
    "aetnet.cli": ("aetnet.config", "aetnet.data", "aetnet.models", "aetnet.tasks", "aetnet.strategies",
                   "aetnet.inference", "aetnet.export", "aetnet.predict", "aetnet.serve", "aetnet.train",
                   "aetnet.compare", "aetnet.recipes"),
}
#: The library and inference side: nothing reachable from these imports aetnet.train.
LIBRARY_ROOTS = ("aetnet", "aetnet.predict", "aetnet.serve", "aetnet.export", "aetnet.inference")
#: (module, function) whose imports are the public API's door to training, left out of the reachability rule:
#: ``aetnet.finetune()`` imports the trainer when it is called, never at ``import aetnet`` or ``aetnet.load``.
TRAINING_DOORS = {("aetnet", "finetune")}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the source tree at ``root``: dotted name -> file."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _skipped_nodes(tree: ast.Module, module: str) -> set[int]:
    doors = {name for mod, name in TRAINING_DOORS if mod == module}
    skipped = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in doors:
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def imported_names(path: Path, module: str = "", is_package: bool = False) -> set[str]:
    """The dotted names ``path`` imports anywhere (top level, functions, ``TYPE_CHECKING`` blocks), relative
    imports resolved; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a submodule)."""
    tree = ast.parse(path.read_text())
    skipped = _skipped_nodes(tree, module)
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, parents: bool = True) -> dict[str, set[str]]:
    """Module -> the aetnet modules it imports, with (``parents``) the packages whose ``__init__`` runs on the way."""
    found = modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        targets = set()
        for name in imported_names(path, module, path.name == "__init__.py"):
            parts = name.split(".")
            prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if not parents:  # the name itself, or the module ``from a import b`` names when ``b`` is not one
                prefixes = [prefix for prefix in prefixes[-2:] if prefix in found][-1:]
            targets.update(prefix for prefix in prefixes if prefix in found)
        targets.discard(module)
        graph[module] = targets
    return graph


def folder_of(module: str) -> str:
    """``aetnet.data.encoding.store`` -> ``aetnet.data``; a module at the root of aetnet/ is its own node."""
    return ".".join(module.split(".")[:2])


def folder_imports(root: Path) -> dict[str, set[str]]:
    """Folder -> the other folders its modules name in imports (not the parents that only run on the way: every
    import runs ``aetnet/__init__``, which is no import of the public API; ``from aetnet import x`` is one)."""
    folders = defaultdict(set)
    for module, targets in import_graph(root, parents=False).items():
        for target in targets:
            if folder_of(target) != folder_of(module):
                folders[folder_of(module)].add(folder_of(target))
    return folders


def layer_offences(root: Path) -> list[str]:
    """Imports of a folder that :data:`MAY_IMPORT` does not allow it (a folder missing from the table too)."""
    offences = []
    for folder, targets in sorted(folder_imports(root).items()):
        if folder in FOUNDATION:
            allowed = set(FOUNDATION) if folder == "aetnet.registry" else {"aetnet.errors"}
        elif folder in ("aetnet", "aetnet.__main__"):
            continue  # the public API and `python -m aetnet` sit on top
        elif folder not in MAY_IMPORT:
            offences.append(f"{folder}: a folder missing from MAY_IMPORT (add it, and to docs/contributing.md)")
            continue
        else:
            allowed = set(MAY_IMPORT[folder]) | set(FOUNDATION)
        offences += [f"{folder} imports {target}" for target in sorted(targets - allowed)]
    return offences


def folder_cycles(root: Path) -> list[list[str]]:
    """The loops between folders (strongly connected components of more than one folder, Tarjan's algorithm)."""
    graph = folder_imports(root)
    nodes = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return cycles


def paths_to_training(root: Path, starts) -> list[str]:
    """For each module of ``starts`` (a package stands for all its modules; ``aetnet`` for its ``__init__`` only)
    that reaches ``aetnet.train`` through imports, the shortest chain of imports that gets there."""
    graph = import_graph(root)
    chains = []
    for start in sorted(m for m in graph if any(m == s or (s != "aetnet" and m.startswith(s + ".")) for s in starts)):
        if start == "aetnet.train" or start.startswith("aetnet.train."):
            continue
        came_from, todo = {start: None}, deque([start])  # breadth first: the shortest chain
        while todo:
            module = todo.popleft()
            for target in sorted(graph[module]):
                if target not in came_from:
                    came_from[target] = module
                    todo.append(target)
        hit = next((m for m in sorted(came_from) if m == "aetnet.train" or m.startswith("aetnet.train.")), None)
        if hit:
            chain = [hit]
            while came_from[chain[-1]] is not None:
                chain.append(came_from[chain[-1]])
            chains.append(" -> ".join(reversed(chain)))
    return chains


def test_each_folder_imports_only_the_layers_below_it():
    assert layer_offences(REPO) == []


def test_no_loop_between_folders():
    assert folder_cycles(REPO) == []


def test_tasks_never_reach_the_trainer():
    """The task adapters (tasks/, installed as aetnet.tasks) sit below training: not even through another module."""
    assert paths_to_training(REPO, ["aetnet.tasks"]) == []


def test_the_library_and_inference_never_reach_the_trainer():
    """predict, serve, export, inference, ``import aetnet`` and ``aetnet.load`` never import aetnet.train."""
    assert paths_to_training(REPO, LIBRARY_ROOTS) == []


def test_loading_a_model_leaves_the_trainer_out(seq_model):
    """The same at run time: importing the whole inference side and ``aetnet.load`` of a model folder (which
    registers the tasks and strategies) put no aetnet.train module in ``sys.modules``."""
    mods = [m for m in modules(REPO) if m.startswith(("aetnet.predict", "aetnet.serve", "aetnet.export",
                                                      "aetnet.inference"))]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            f"import aetnet\nassert aetnet.load({str(seq_model)!r}).meta['kind'] == 'sequence'\n"
            "print(sorted(m for m in sys.modules if m.startswith('aetnet.train')))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def cli_importers(root: Path) -> list[str]:
    """Modules outside aetnet.cli (and ``aetnet/__main__.py``) that import the command line."""
    return [f"{m} imports {t}" for m, targets in sorted(import_graph(root).items()) for t in sorted(targets)
            if folder_of(t) == "aetnet.cli" and folder_of(m) not in ("aetnet.cli", "aetnet.__main__")]


def test_only_the_command_line_imports_the_command_line():
    """aetnet.cli is the top: the library and the tasks never import it (only aetnet/__main__.py may)."""
    assert cli_importers(REPO) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


#: A clean miniature of the layout: every rule passes on it.
CLEAN = {
    "aetnet/__init__.py": "def finetune():\n    from aetnet.train.runner import run\n\n"
                          "def load():\n    from aetnet.inference.modelio import load_model\n",
    "aetnet/errors.py": "",
    "aetnet/data/__init__.py": "",
    "aetnet/data/documents/__init__.py": "",
    "aetnet/data/documents/document.py": "from aetnet.errors import AetnetError\n",
    "aetnet/config/__init__.py": "",
    "aetnet/config/settings.py": "from aetnet.data.documents import document\n",
    "aetnet/inference/__init__.py": "",
    "aetnet/inference/modelio.py": "def get_task():\n    import aetnet.tasks\n",
    "aetnet/predict/__init__.py": "",
    "aetnet/predict/predictor.py": "from aetnet.inference.modelio import get_task\n",
    "aetnet/train/__init__.py": "",
    "aetnet/train/runner.py": "from aetnet.inference import modelio\nfrom . import trainer\n",
    "aetnet/train/trainer.py": "",
    "tasks/__init__.py": "from aetnet.tasks import funsd\n",
    "tasks/funsd.py": "from aetnet.config.settings import RunConfig\n",
    "recipes/__init__.py": "",
}


def test_the_rules_pass_on_a_clean_tree(tmp_path):
    root = _tree(tmp_path, CLEAN)
    assert import_graph(root)["aetnet.train.runner"] >= {"aetnet.inference.modelio", "aetnet.train.trainer"}
    assert layer_offences(root) == folder_cycles(root) == []
    assert paths_to_training(root, LIBRARY_ROOTS) == paths_to_training(root, ["aetnet.tasks"]) == []


def test_each_rule_catches_a_planted_violation(tmp_path):
    """(d) A lazy import in a function breaks each rule, as does one through another module."""
    # a loop between folders, by a lazy import: data -> config -> data
    loop = _tree(tmp_path / "loop", {**CLEAN, "aetnet/data/documents/splits.py":
                                     "def f():\n    from aetnet.config.settings import RunConfig\n"})
    assert folder_cycles(loop) == [["aetnet.config", "aetnet.data"]]
    assert "aetnet.data imports aetnet.config" in layer_offences(loop)
    # the public API imported from below (the old `from aetnet import __version__` of the window cache key)
    root_loop = _tree(tmp_path / "root", {**CLEAN, "aetnet/data/documents/key.py":
                                          "def key():\n    from aetnet import __version__\n"})
    assert folder_cycles(root_loop) == [["aetnet", "aetnet.config", "aetnet.data", "aetnet.inference",
                                         "aetnet.tasks"]]
    assert "aetnet.data imports aetnet" in layer_offences(root_loop)
    # a task importing the trainer through another module (a relative import of a tasks helper)
    tasks = _tree(tmp_path / "tasks", {**CLEAN, "tasks/funsd.py": "from .helper import x\n",
                                       "tasks/helper.py": "def x():\n    import aetnet.train.trainer\n"})
    assert paths_to_training(tasks, ["aetnet.tasks"]) == [
        "aetnet.tasks -> aetnet.tasks.funsd -> aetnet.tasks.helper -> aetnet.train",
        "aetnet.tasks.funsd -> aetnet.tasks.helper -> aetnet.train",
        "aetnet.tasks.helper -> aetnet.train"]
    # aetnet.load reaching the trainer through inference (the old `from aetnet.train.runner import load_model`)
    load = _tree(tmp_path / "load", {**CLEAN, "aetnet/inference/modelio.py":
                                     "def load_model():\n    from aetnet.train.runner import save\n"})
    chains = paths_to_training(load, LIBRARY_ROOTS)
    assert "aetnet -> aetnet.inference.modelio -> aetnet.train" in chains
    assert "aetnet.predict.predictor -> aetnet.inference.modelio -> aetnet.train" in chains
    assert "aetnet.inference imports aetnet.train" in layer_offences(load)
    # a package __init__ counts: importing aetnet.data.documents.document runs aetnet/data/__init__.py
    init = _tree(tmp_path / "init", {**CLEAN, "aetnet/data/__init__.py": "import aetnet.train.trainer\n"})
    assert "aetnet.tasks.funsd -> aetnet.config.settings -> aetnet.data -> aetnet.train" in \
        paths_to_training(init, ["aetnet.tasks"])
    # the command line imported from below, and a new folder nobody placed in the table
    cli = _tree(tmp_path / "cli", {**CLEAN, "aetnet/cli/__init__.py": "", "aetnet/cli/main.py": "",
                                   "aetnet/widgets/__init__.py": "", "aetnet/widgets/w.py": "import aetnet.cli.main\n"})
    assert layer_offences(cli) == ["aetnet.widgets: a folder missing from MAY_IMPORT (add it, and to "
                                   "docs/contributing.md)"]
    assert cli_importers(cli) == ["aetnet.widgets.w imports aetnet.cli", "aetnet.widgets.w imports aetnet.cli.main"]
    assert cli_importers(_tree(tmp_path / "clean", CLEAN)) == []


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from aetnet.train.runner import finetune\n    import aetnet.cli.main\n"
                    "    from ..models import heads\n")
    assert imported_names(path, "aetnet.data.m") >= {"aetnet.train.runner", "aetnet.cli.main", "aetnet.models.heads"}


def test_modules_stay_small():
    """One concept per module, grouped by what belongs together, not split by a line cap. A module past 700 lines
    almost surely holds more than one concept: move one out."""
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in modules(REPO).values()}
    assert len(sizes) > 50
    assert {path: n for path, n in sizes.items() if n > 700} == {}
