"""The settings reference: every setting of a run (:class:`aetnet.config.settings.RunConfig`, its shared sections and
the registered strategies' sections), with its type, default and the docstring written under its field.

:func:`settings_markdown` renders it; the documentation site's ``settings`` page is generated from it
(``docs/hooks.py``), so the page cannot fall behind the dataclasses; ``aetnet recipes keys`` prints
:func:`settings_entries`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any

PIPE = "\\|"  # a | inside a Markdown table cell


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: the string literal right under each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def settings_entries() -> list[dict[str, Any]]:
    """Every setting: ``key`` (``section.name`` for nested ones), ``type``, ``default`` (the value) and
    ``description`` (empty when the field has no docstring), in the order of ``config.yaml``."""
    from aetnet.config.settings import RunConfig, config_sections

    out = []
    top_docs = field_docs(RunConfig)
    sections = config_sections()
    for f in dataclasses.fields(RunConfig):
        if f.name not in sections and f.name != "sections":
            out.append({"key": f.name, "type": str(f.type), "default": _default(f),
                        "description": top_docs.get(f.name, "")})
    for name, cls in sections.items():
        docs = field_docs(cls)
        for sub in dataclasses.fields(cls):
            out.append({"key": f"{name}.{sub.name}", "type": str(sub.type), "default": _default(sub),
                        "description": docs.get(sub.name, "")})
    return out


def settings_rows() -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` of every setting, the default as ``repr``."""
    return [(e["key"], e["type"], repr(e["default"]), e["description"]) for e in settings_entries()]


def settings_markdown() -> str:
    """One table per section of the configuration, in the order of ``config.yaml``."""
    out, section = [], None
    header = ["| setting | type | default | what it does |", "|---|---|---|---|"]
    for key, kind, default, doc in settings_rows():
        head = key.split(".")[0] if "." in key else "run"
        if head != section:
            section = head
            out += ["", f"## `{head}`" if head != "run" else "## Run", "", *header]
        cells = [f"`{key}`", f"`{kind}`", f"`{default}`", doc.replace("``", "`")]
        out.append("| " + " | ".join(c.replace("|", PIPE) for c in cells) + " |")
    return "\n".join(out).strip() + "\n"
