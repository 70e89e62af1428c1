"""Lower layers never import upper ones (read from the source, so a lazy import inside a function counts)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "aetnet"
TASKS = Path(__file__).resolve().parents[1] / "tasks"
#: The inference and tooling side (prediction, export, serving, run comparison) sits above training.
APPS = ("aetnet.predict", "aetnet.export", "aetnet.serve", "aetnet.compare")
# layer -> packages it must not import
FORBIDDEN = {
    "data": ("aetnet.models", "aetnet.strategies", "aetnet.train", "aetnet.cli", "aetnet.tasks") + APPS,
    "models": ("aetnet.strategies", "aetnet.train", "aetnet.cli", "aetnet.tasks") + APPS,
    "strategies": ("aetnet.train", "aetnet.cli") + APPS,
    "train": ("aetnet.cli",) + APPS,
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_lower_layers_do_not_import_upper_ones():
    offenders = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / layer).rglob("*.py")):  # subpackages (data/demo) too
            for name in _imports(path):
                if name.startswith(forbidden):
                    offenders.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_tasks_do_not_import_the_inference_side():
    """The task adapters (tasks/, installed as aetnet.tasks) sit beside training, below predict/export/serve."""
    offenders = [f"tasks/{p.name} imports {name}" for p in sorted(TASKS.rglob("*.py")) for name in _imports(p)
                 if name.startswith(APPS)]
    assert not offenders, "\n".join(offenders)


def test_only_the_command_line_imports_the_command_line():
    """aetnet.cli is the top: the library and the tasks never import it (only aetnet/__main__.py may)."""
    sources = [p for p in sorted(ROOT.rglob("*.py")) if "cli" not in p.relative_to(ROOT).parts[:1]]
    sources = [p for p in sources if p.name != "__main__.py" or p.parent != ROOT] + sorted(TASKS.rglob("*.py"))
    offenders = [f"{p} imports {name}" for p in sources for name in _imports(p)
                 if name == "aetnet.cli" or name.startswith("aetnet.cli.")]
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The import reader finds a lazy import inside a function (the rules are not vacuous)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from aetnet.train.runner import finetune\n    import aetnet.cli.main\n")
    assert {"aetnet.train.runner", "aetnet.cli.main"} <= _imports(path)


def test_modules_stay_small():
    """One concept per module, grouped by what belongs together, not split by a line cap. A module past 700 lines
    almost surely holds more than one concept: move one out."""
    sizes = {str(p.relative_to(ROOT.parent)): len(p.read_text().splitlines())
             for folder in (ROOT, TASKS) for p in folder.rglob("*.py")}
    assert len(sizes) > 50
    assert {path: n for path, n in sizes.items() if n > 700} == {}
