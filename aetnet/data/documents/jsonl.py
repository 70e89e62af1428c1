"""JSON Lines files (``predictions.jsonl``, ``skipped.jsonl``, converted pages): one JSON value per line,
UTF-8, non-ASCII text kept as it is."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write ``records`` to ``path``, one JSON line each (the file is replaced).

    Returns:
        The number of lines written.
    """
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n
