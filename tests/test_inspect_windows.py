"""`aetnet inspect --windows`: one JSON line per window, in document order, exactly what the model sees."""

from __future__ import annotations

import json
from collections import defaultdict

from aetnet.cli.main import main


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_funsd_windows_file(shared_data, tmp_path):
    out = tmp_path / "windows.jsonl"
    assert main(["inspect", "funsd", "--data", str(shared_data / "funsd"), "--windows", str(out),
                 "data.max_length=128", "data.stride=32"]) == 0
    records = _read(out)
    stems = {split: sorted(p.stem for p in (shared_data / "funsd" / "dataset" / folder / "annotations").glob("*.json"))
             for split, folder in (("train", "training_data"), ("eval", "testing_data"))}
    # document order, windows numbered 0, 1, ... within each document
    order = [r["doc"] for r in records if r["window"] == 0]
    assert order == stems["train"] + stems["eval"]
    per_doc = defaultdict(list)
    for r in records:
        per_doc[r["doc"]].append(r["window"])
    assert all(v == list(range(len(v))) for v in per_doc.values())
    assert sum(len(v) > 1 for v in per_doc.values()) > 5  # 128-token windows: many documents overflow
    for r in records:
        n = len(r["input_ids"])
        assert n <= 128 and len(r["bbox"]) == len(r["labels"]) == len(r["tokens"]) == len(r["word_bbox"]) == n
        assert r["tokens"][0] == "<s>" and r["tokens"][-1] == "</s>"
        for token, label in zip(r["tokens"], r["labels"]):
            if label is not None:  # only a word's first subword (the one carrying the space marker)
                assert token.startswith("\u0120") and label in {"O", "B-HEADER", "I-HEADER", "B-QUESTION",
                                                                  "I-QUESTION", "B-ANSWER", "I-ANSWER"}
    # the labelled words of a document, over all its windows, are its annotated non-empty words
    doc = stems["eval"][0]
    form = json.loads((shared_data / "funsd/dataset/testing_data/annotations" / f"{doc}.json").read_text())["form"]
    n_words = sum(1 for e in form for w in e["words"] if w["text"].strip())
    labelled = {wid for r in records if r["doc"] == doc for wid, lab in zip(r["word_ids"], r["labels"])
                if lab is not None}
    assert labelled == set(range(n_words))


def test_qa_windows_file_holds_the_answer_span(tmp_path):
    out = tmp_path / "qa.jsonl"
    assert main(["inspect", "docvqa", "--demo", "--windows", str(out)]) == 0
    records = _read(out)
    assert records and all("answer" in r and r["page"] for r in records)
    with_answer = [r for r in records if r["answer"]]
    assert with_answer
    for r in with_answer:
        a = r["answer"]
        assert 0 < a["start"] <= a["end"] < len(r["input_ids"])
        assert r["word_ids"][a["start"]] is not None and r["word_bbox"][a["start"]] != [0, 0, 0, 0]
        assert a["text"]


def test_classification_windows_file_has_the_class(shared_data, tmp_path):
    out = tmp_path / "cls.jsonl"
    assert main(["inspect", "rvl-cdip", "--data", str(shared_data / "rvl_cdip"), "--windows", str(out)]) == 0
    (record,) = _read(out)
    assert record["label"] == "memo" and record["doc"].endswith("80035521.tif")  # class 15 in labels/sample.txt
    assert "labels" not in record and len(record["input_ids"]) <= 512
