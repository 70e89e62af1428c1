"""Nothing in the library unpickles untrusted files or runs remote code."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("aetnet", "tasks") for p in (REPO / folder).rglob("*.py"))


def test_sources_found():
    assert len(SOURCES) > 20


def test_no_unsafe_loading():
    offences = []
    for path in SOURCES:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offences.append(f"{path.name}: torch.load without weights_only=True")
        for pattern in (r"pickle\.loads?\(", r"(?<![.\w])eval\(", r"trust_remote_code\s*=\s*True", r"dill\."):
            if re.search(pattern, text):
                offences.append(f"{path.name}: {pattern}")
    assert not offences, offences
