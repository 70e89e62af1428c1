"""The settings reference: every field of the run configuration (:class:`aetnet.config.settings.RunConfig` and its
sections), with its type, default and the docstring written under it in ``aetnet/config/settings.py``.

:func:`settings_markdown` renders it; the documentation site's ``settings`` page is generated from it
(``docs/hooks.py``), so the page cannot fall behind the dataclasses.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import Any

#: The run's own fields carry no docstring in ``config.py``; their descriptions here.
RUN_FIELDS = {"task": "Registered task (`funsd`, `cord`, `rvl-cdip`, `docvqa`, `funsd-re`, `token`, `classify`, "
                      "`qa`, `re`, `xfund`, `xfund-re`).",
              "strategy": "Tuning strategy (`full`, `aet`, `lora`, `prompt`, `aet-lora`, `head`).",
              "output": "Run folder; `None`: `runs/<task>-<strategy>-<time>/`."}


PIPE = "\\|"  # a | inside a Markdown table cell


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass: the string literal right under each field."""
    tree = ast.parse(inspect.getsource(cls))
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


def settings_rows() -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` of every setting, ``section.name`` for nested ones."""
    from aetnet.config.settings import RunConfig

    rows = []
    top_docs = {**field_docs(RunConfig), **RUN_FIELDS}
    for f in dataclasses.fields(RunConfig):
        value = _default(f)
        if dataclasses.is_dataclass(value):
            docs = field_docs(type(value))
            for sub in dataclasses.fields(value):
                rows.append((f"{f.name}.{sub.name}", str(sub.type), repr(_default(sub)), docs.get(sub.name, "")))
        else:
            rows.append((f.name, str(f.type), repr(value), top_docs.get(f.name, "")))
    return rows


def settings_markdown() -> str:
    """One table per section of the configuration, in the order of :class:`~aetnet.config.settings.RunConfig`."""
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
