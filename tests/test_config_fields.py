"""Every field of the config dataclasses is read somewhere outside its own dataclass.

A setting that nothing reads does nothing, and a setting that does nothing must not exist. The config dataclasses
are those of aetnet/config/settings.py and the settings sections the strategies register (``AETConfig`` in
strategies/aet/config.py, ``LoraSettings``, ``PromptSettings``). The check is static and cheap: it parses the package
(``aetnet/`` and ``tasks/``, without the bodies of the config dataclasses, whose own validation reads every field)
and collects every attribute name read (``cfg.train.seed``, ``t.seed``) and every name read through
``getattr`` (a constant, or an f-string such as ``f"{name}_weight"`` taken as a pattern).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "aetnet" / "config" / "settings.py"


def _is_dataclass(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list)


def config_classes() -> dict[Path, set[str]]:
    """Source file -> names of the config dataclasses it defines: every dataclass of settings.py and every
    strategy's registered settings section."""
    from aetnet.registry import STRATEGIES

    out = {CONFIG: {node.name for node in ast.parse(CONFIG.read_text()).body if _is_dataclass(node)}}
    for cls in STRATEGIES.sections().values():
        out.setdefault(Path(inspect.getsourcefile(cls)).resolve(), set()).add(cls.__name__)
    return out


def config_fields() -> dict[str, list[str]]:
    """Class name -> annotated field names, for every config dataclass."""
    out: dict[str, list[str]] = {}
    for path, names in config_classes().items():
        for node in ast.parse(path.read_text()).body:
            if _is_dataclass(node) and node.name in names:
                out[node.name] = [s.target.id for s in node.body
                                  if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    return out


def _getattr_name(node: ast.Call) -> str | re.Pattern | None:
    """The attribute name (or, for an f-string, a pattern of names) a ``getattr(obj, name)`` reads."""
    if not (isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
        return None
    arg = node.args[1]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and any(isinstance(v, ast.Constant) for v in arg.values):
        # f"{name}_weight": any name with that fixed part (a bare f"{name}" would match everything)
        parts = [re.escape(v.value) if isinstance(v, ast.Constant) else r"\w+" for v in arg.values]
        return re.compile("".join(parts))
    return None


def _outside(tree: ast.AST, skip: set[str]):
    """Every node of ``tree`` except those inside the classes named in ``skip``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.ClassDef) and node.name in skip:
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def package_reads() -> tuple[set[str], list[re.Pattern]]:
    """Attribute names read in the package (the config dataclasses' bodies excepted), and getattr f-string
    patterns."""
    names: set[str] = set()
    patterns: list[re.Pattern] = []
    classes = config_classes()
    files = [p for d in ("aetnet", "tasks") for p in (ROOT / d).rglob("*.py")]
    for path in files:
        for node in _outside(ast.parse(path.read_text()), classes.get(path.resolve(), set())):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Call):
                read = _getattr_name(node)
                if isinstance(read, str):
                    names.add(read)
                elif read is not None:
                    patterns.append(read)
    return names, patterns


def test_config_has_the_sections():
    """The parser finds the dataclasses (guards the test itself against reading nothing)."""
    fields = config_fields()
    assert {"DataConfig", "ModelConfig", "TrainConfig", "AETConfig", "LoraSettings", "PromptSettings",
            "RunConfig"} <= set(fields)
    assert "seed" in fields["TrainConfig"] and "pita_rule" in fields["AETConfig"] and "r" in fields["LoraSettings"]


@pytest.mark.parametrize("cls", sorted(config_fields()))
def test_every_config_field_is_read(cls):
    names, patterns = package_reads()
    unread = [f for f in config_fields()[cls]
              if f not in names and not any(p.fullmatch(f) for p in patterns)]
    assert not unread, (f"{cls} fields never read outside their dataclass: {unread}; a setting that "
                        "does nothing must not exist (use it or remove it, and its recipes' keys)")


def test_the_check_can_fail():
    """A name that nothing reads is reported (the check is not vacuous)."""
    names, patterns = package_reads()
    assert "no_such_setting_xyz" not in names
    assert not any(p.fullmatch("no_such_setting_xyz") for p in patterns)


def test_a_dataclass_body_does_not_count_as_a_reader():
    """The reads inside a config dataclass (its validation) are skipped, so they cannot hide an unused field."""
    tree = ast.parse("class S:\n    def check(self):\n        return self.only_in_s\nx = cfg.elsewhere\n")
    read = {n.attr for n in _outside(tree, {"S"}) if isinstance(n, ast.Attribute)}
    assert read == {"elsewhere"}
