"""Lower layers never import upper ones (read from the source, so a lazy import inside a function counts)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "aetnet"
# layer -> packages it must not import
FORBIDDEN = {
    "data": ("aetnet.models", "aetnet.tuning", "aetnet.train", "aetnet.cli", "aetnet.tasks", "aetnet.predict"),
    "models": ("aetnet.tuning", "aetnet.train", "aetnet.cli", "aetnet.tasks", "aetnet.predict"),
    "tuning": ("aetnet.train", "aetnet.cli", "aetnet.predict"),
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
        for path in sorted((ROOT / layer).glob("*.py")):
            for name in _imports(path):
                if name.startswith(forbidden):
                    offenders.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)
