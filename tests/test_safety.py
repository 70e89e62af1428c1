"""Nothing in the library unpickles untrusted files or runs remote code."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("aetnet", "tasks") for p in (REPO / folder).rglob("*.py"))


def test_sources_found():
    assert len(SOURCES) > 20


#: Unpickling that reads no file: (path relative to the repository, the exact call). The window build hands each
#: chunk of documents to its own encoding worker as a compressed pickle made in memory by the preparing process
#: (the same module); multiprocessing pickles whatever it passes to a worker in the same way.
IN_MEMORY_HANDOFFS = {("aetnet/data/encoding/build.py", "pickle.loads(zlib.decompress(payload))")}


def test_no_unsafe_loading():
    offences = []
    for path in SOURCES:
        text = path.read_text()
        for name, call in IN_MEMORY_HANDOFFS:
            if path.relative_to(REPO).as_posix() == name:
                assert text.count("pickle.load") == text.count(call) == 1, f"{name}: {call} expected once"
                text = text.replace(call, "")
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in match.group(1):
                offences.append(f"{path.name}: torch.load without weights_only=True")
        for pattern in (r"pickle\.loads?\(", r"(?<![.\w])eval\(", r"trust_remote_code\s*=\s*True", r"dill\."):
            if re.search(pattern, text):
                offences.append(f"{path.name}: {pattern}")
    assert not offences, offences
