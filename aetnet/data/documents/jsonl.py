"""JSON Lines files (``predictions.jsonl``, ``skipped.jsonl``, converted pages): one JSON value per line,
UTF-8, non-ASCII text kept as it is."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


def jsonl_line(record: Any) -> str:
    """One record as a JSON Lines line (newline included)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


@contextmanager
def replaced_when_done(path: Path) -> Iterator[TextIO]:
    """``path`` opened for writing (UTF-8) as ``<path>.partial``, renamed to ``path`` when the block ends without
    an error: a writing that failed half way leaves no file at ``path`` that looks complete."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as fh:
        yield fh
    os.replace(partial, path)


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write ``records`` to ``path``, one JSON line each (the file is replaced).

    Returns:
        The number of lines written.
    """
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(jsonl_line(record))
            n += 1
    return n
