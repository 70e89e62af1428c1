"""Every field of the config dataclasses is read somewhere outside aetnet/config/settings.py.

A setting that nothing reads does nothing, and a setting that does nothing must not exist. The
check is static and cheap: it parses the package (``aetnet/`` and ``tasks/``, without config.py)
and collects every attribute name read (``cfg.train.seed``, ``t.seed``) and every name read through
``getattr`` (a constant, or an f-string such as ``f"{name}_weight"`` taken as a pattern).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "aetnet" / "config" / "settings.py"


def config_fields() -> dict[str, list[str]]:
    """Class name -> annotated field names, for every dataclass in config.py."""
    out: dict[str, list[str]] = {}
    for node in ast.parse(CONFIG.read_text()).body:
        is_dataclass = isinstance(node, ast.ClassDef) and any(
            "dataclass" in ast.unparse(d) for d in node.decorator_list
        )
        if is_dataclass:
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


def package_reads() -> tuple[set[str], list[re.Pattern]]:
    """Attribute names read in the package (config.py excepted), and getattr f-string patterns."""
    names: set[str] = set()
    patterns: list[re.Pattern] = []
    files = [p for d in ("aetnet", "tasks") for p in (ROOT / d).rglob("*.py") if p != CONFIG]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
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
    assert {"DataConfig", "ModelConfig", "TrainConfig", "AETConfig", "RunConfig"} <= set(fields)
    assert "seed" in fields["TrainConfig"] and "pita_rule" in fields["AETConfig"]


@pytest.mark.parametrize("cls", sorted(config_fields()))
def test_every_config_field_is_read(cls):
    names, patterns = package_reads()
    unread = [f for f in config_fields()[cls]
              if f not in names and not any(p.fullmatch(f) for p in patterns)]
    assert not unread, (f"{cls} fields never read outside aetnet/config/settings.py: {unread}; a setting that "
                        "does nothing must not exist (use it or remove it, and its recipes' keys)")


def test_the_check_can_fail():
    """A name that nothing reads is reported (the check is not vacuous)."""
    names, patterns = package_reads()
    assert "no_such_setting_xyz" not in names
    assert not any(p.fullmatch("no_such_setting_xyz") for p in patterns)
