"""DocVQA reader: the real sample with Tesseract, and a hand-made JSON with an official OCR file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytesseract
import pytest
from PIL import Image

from aetnet.errors import DataError
from aetnet.tasks.docvqa import docvqa_summary, read_docvqa, read_official_ocr


@pytest.fixture(scope="session")
def ocr_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docvqa-ocr-cache")


def test_real_sample_with_tesseract(shared_data, ocr_cache, caplog):
    docvqa = shared_data / "docvqa"
    raw = json.loads((docvqa / "val_v1.0_sample.json").read_text())
    with caplog.at_level(logging.INFO, logger="aetnet.tasks.docvqa"):
        splits = read_docvqa(docvqa / "val_v1.0_sample.json", cache_dir=ocr_cache)
    assert list(splits) == [raw["dataset_split"]] == ["val"]
    examples = splits["val"]
    assert len(examples) == len(raw["data"])
    for ex, entry in zip(examples, raw["data"]):
        assert ex.id == str(entry["questionId"])
        assert ex.question == entry["question"]
        assert ex.answers == entry["answers"]
        assert ex.document.image_path == docvqa / entry["image"]
        assert ex.document.page_size == Image.open(docvqa / entry["image"]).size
        assert ex.document.meta["ocr"] == "tesseract"
    located = [ex for ex in examples if ex.answer_span is not None]
    assert located, "no answer located among the Tesseract words"
    for ex in located:
        start, end = ex.answer_span
        span_text = " ".join(ex.document.words[start : end + 1]).lower()
        assert any(a.lower() in span_text or span_text in a.lower() for a in ex.answers), span_text
    summary = docvqa_summary(examples)
    assert summary["questions"] == len(raw["data"]) and summary["located"] == len(located)
    assert any("answers located for" in r.getMessage() for r in caplog.records)


def _official_ocr(words_with_boxes, width=200, height=100) -> dict:
    """Microsoft Read format: one line per word, polygons given as 8 numbers (clockwise from top-left)."""
    lines = []
    for text, (x0, y0, x1, y1) in words_with_boxes:
        poly = [x0, y0 + 1, x1, y0, x1 + 1, y1, x0 - 1, y1 - 1]  # slightly skewed quadrilateral
        lines.append({"boundingBox": poly, "text": text, "words": [{"boundingBox": poly, "text": text}]})
    return {"status": "Succeeded", "recognitionResults": [
        {"page": 1, "clockwiseOrientation": 0.0, "width": width, "height": height, "unit": "pixel",
         "lines": lines}]}


def _write_fixture(tmp_path: Path) -> Path:
    (tmp_path / "documents").mkdir()
    (tmp_path / "ocr_results").mkdir()
    Image.new("RGB", (200, 100), "white").save(tmp_path / "documents" / "pageA.png")
    words_a = [("Invoice", (10, 10, 50, 20)), ("Total:", (10, 30, 40, 40)), ("$1,250.00", (45, 30, 90, 40)),
               ("Acme", (10, 50, 40, 60)), ("Corporatlon", (45, 50, 110, 60)), ("", (0, 0, 1, 1))]
    (tmp_path / "ocr_results" / "pageA.json").write_text(json.dumps(_official_ocr(words_a)))
    # pageB has an OCR file but no image: a blank page of the OCR's size.
    words_b = [("Date", (5, 5, 30, 15)), ("June", (35, 5, 60, 15)), ("3,", (62, 5, 70, 15)),
               ("1971", (72, 5, 95, 15))]
    (tmp_path / "ocr_results" / "pageB.json").write_text(json.dumps(_official_ocr(words_b, 120, 80)))
    data = {"dataset_name": "docvqa", "dataset_version": "1.0", "data": [
        {"questionId": 1, "question": "What is the total?", "image": "documents/pageA.png", "docId": 7,
         "answers": ["$1,250.00", "1250"]},
        {"questionId": 2, "question": "Which company?", "image": "documents/pageA.png", "docId": 7,
         "answers": ["ACME Corporation"]},
        {"questionId": 3, "question": "Who signed?", "image": "documents/pageA.png", "docId": 7,
         "answers": ["John Smith"]},
        {"questionId": 4, "question": "What is the date?", "image": "documents/pageB.png", "docId": 8,
         "answers": ["June 3, 1971"]},
    ]}
    path = tmp_path / "train_v1.0.json"
    path.write_text(json.dumps(data))
    return path


def test_handmade_json_with_official_ocr(tmp_path, monkeypatch, caplog):
    calls = []
    real = pytesseract.image_to_data
    monkeypatch.setattr(pytesseract, "image_to_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    json_path = _write_fixture(tmp_path)
    with caplog.at_level(logging.WARNING, logger="aetnet.tasks.docvqa"):
        splits = read_docvqa(json_path, cache_dir=tmp_path / "cache")
    assert calls == []  # official OCR files: Tesseract never runs
    assert list(splits) == ["train_v1.0"]  # no dataset_split: the file stem
    q1, q2, q3, q4 = splits["train_v1.0"]
    page = q1.document
    assert q2.document is page and q3.document is page  # one Document per page
    assert page.words == ["Invoice", "Total:", "$1,250.00", "Acme", "Corporatlon"]
    assert page.boxes[2] == [44.0, 30.0, 91.0, 40.0]  # min/max of the skewed polygon
    assert page.meta == {"ocr": "official", "docId": 7}
    assert page.image_path == tmp_path / "documents" / "pageA.png"
    assert q1.answer_span == (2, 2)  # exact
    assert q2.answer_span == (3, 4)  # fuzzy: OCR typo and case
    assert q3.answer_span is None and q3.answers == ["John Smith"]  # kept, not dropped
    assert q4.answer_span == (1, 3)
    assert q4.document.image_path is None and q4.document.page_size == (120, 80)
    assert docvqa_summary(splits["train_v1.0"]) == {
        "questions": 4, "located": 3, "unlocated": 1, "without_answers": 0
    }
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 of 2 DocVQA pages have no image" in warning.getMessage()

    # Without the fuzzy pass the typo'd company is no longer found.
    strict = read_docvqa(json_path, cache_dir=tmp_path / "cache", fuzzy_threshold=1.01)["train_v1.0"]
    assert strict[1].answer_span is None and strict[0].answer_span == (2, 2)


def test_tesseract_runs_once_per_page(tmp_path, monkeypatch):
    calls = []
    real = pytesseract.image_to_data
    monkeypatch.setattr(pytesseract, "image_to_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    (tmp_path / "documents").mkdir()
    Image.new("L", (64, 32), 255).save(tmp_path / "documents" / "p.png")
    data = {"dataset_split": "test", "data": [
        {"questionId": i, "question": f"q{i}?", "image": "documents/p.png", "docId": 1} for i in range(3)
    ]}
    (tmp_path / "test.json").write_text(json.dumps(data))
    examples = read_docvqa(tmp_path / "test.json", cache_dir=tmp_path / "cache")["test"]
    assert len(calls) == 1 and len(examples) == 3
    assert all(ex.answers == [] and ex.answer_span is None for ex in examples)
    assert docvqa_summary(examples)["without_answers"] == 3


def test_malformed_inputs(tmp_path):
    json_path = _write_fixture(tmp_path)
    data = json.loads(json_path.read_text())
    del data["data"][2]["question"]
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"data\[2\]\.question"):
        read_docvqa(json_path, cache_dir=tmp_path / "cache")

    bad_ocr = tmp_path / "ocr_results" / "pageA.json"
    record = json.loads(bad_ocr.read_text())
    record["recognitionResults"][0]["lines"][1]["words"][0]["boundingBox"] = [1, 2, 3]
    bad_ocr.write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"lines\[1\]\.words\[0\]\.boundingBox"):
        read_official_ocr(bad_ocr)

    (tmp_path / "q.json").write_text(json.dumps({"data": [
        {"questionId": 1, "question": "?", "image": "documents/nowhere.png", "answers": ["x"]}]}))
    with pytest.raises(DataError, match="nowhere.png.*does not exist"):
        read_docvqa(tmp_path / "q.json", cache_dir=tmp_path / "cache")
