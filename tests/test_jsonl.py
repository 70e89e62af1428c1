"""JSON Lines writer shared by predictions.jsonl, skipped.jsonl and converted pages."""

import json

from aetnet.data.documents.jsonl import write_jsonl


def test_write_jsonl_one_line_each_utf8(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old content\n")
    records = [{"id": "é-1", "words": ["Größe", "€"]}, {"id": 2}]
    assert write_jsonl(path, iter(records)) == 2
    raw = path.read_bytes().decode("utf-8")
    assert raw.count("\n") == 2 and "Größe" in raw  # replaced, not appended; non-ASCII kept as text
    assert [json.loads(line) for line in raw.splitlines()] == records
