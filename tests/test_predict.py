"""Predict on real pages (FUNSD PNG, RVL-CDIP TIFF, DocVQA PNG, a made-up two-page PDF) for the three
task kinds; words checked against pytesseract run directly, numbers against direct forwards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from aetnet.cli.main import main
from aetnet.errors import AetnetError, DataError
from aetnet.predict.predictor import PDF_DPI, Predictor, group_entities, line_segments

# The real samples in tests/data (the folder of conftest.py's shared_data fixture; needed here at import time).
DATA = Path(__file__).resolve().parent / "data"
FUNSD_PAGE = DATA / "funsd/dataset/testing_data/images/82092117.png"
RVL_PAGE = DATA / "rvl_cdip/images/80035521.tif"
DOCVQA_PAGE = DATA / "docvqa/documents/ffhx0227_1.png"
TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]
CLASSES = ["letter", "form", "email", "invoice"]  # the seq_model fixture's classes (conftest.py)


def _tesseract_words(image: Image.Image) -> list[str]:
    import pytesseract

    data = pytesseract.image_to_data(image.convert("RGB"), lang="eng", config="--psm 3",
                                     output_type=pytesseract.Output.DICT)
    return [t.strip() for t in data["text"] if t.strip()]


def _norm(box, size):
    w, h = size
    return [int(1000 * box[0] / w), int(1000 * box[1] / h),
            int(1000 * box[2] / w), int(1000 * box[3] / h)]  # truncated, as LayoutLMv3's processor


def _softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


def test_token_model_on_a_funsd_form(funsd_run):
    page = Image.open(FUNSD_PAGE).convert("RGB")
    records = Predictor(funsd_run).predict_file(FUNSD_PAGE)
    assert len(records) == 1 and records[0]["page"] == 1 and records[0]["kind"] == "token"
    json.dumps(records)  # plain JSON types only
    words = records[0]["words"]
    assert [w["text"] for w in words] == _tesseract_words(page)
    labels = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
    assert all(w["label"] in labels and 1 / 7 <= w["score"] <= 1 for w in words)
    # Entities cover exactly the non-O words, each with its words' text and box union.
    covered = sorted(i for e in records[0]["entities"] for i in e["words"])
    assert covered == [i for i, w in enumerate(words) if w["label"] != "O"]
    for ent in records[0]["entities"]:
        assert ent["text"] == " ".join(words[i]["text"] for i in ent["words"])
        assert ent["box"][0] == min(words[i]["box"][0] for i in ent["words"])
        assert ent["box"][3] == max(words[i]["box"][3] for i in ent["words"])


def test_long_page_windows_match_a_direct_forward(funsd_run):
    """64-token windows: the page needs many; the first word's scores come from window 0 alone."""
    predictor = Predictor(funsd_run, max_length=64, stride=16, box_level="word")
    page = Image.open(FUNSD_PAGE).convert("RGB")
    record = predictor.predict_image(page)
    assert record["windows"] > 3
    assert all(w["score"] > 0 for w in record["words"])  # every word got a prediction
    texts = [w["text"] for w in record["words"]]
    boxes = [_norm(w["box"], page.size) for w in record["words"]]
    processor = predictor.processor
    enc = processor(page, texts, boxes=boxes, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        keys = ("input_ids", "bbox", "attention_mask", "pixel_values")
        logits = predictor.model(**{k: enc[k] for k in keys}).logits
    first = _softmax(logits[0, 1].numpy())  # token 1 = first subword of word 0
    assert record["words"][0]["label"] == predictor.labels[int(first.argmax())]
    assert abs(record["words"][0]["score"] - first.max()) <= 1e-4


def test_sequence_model_on_an_rvl_cdip_tiff(seq_model):
    page = Image.open(RVL_PAGE).convert("RGB")
    predictor = Predictor(seq_model)
    (record,) = predictor.predict_file(RVL_PAGE)
    texts = _tesseract_words(page)
    assert [w["text"] for w in record["words"]] == texts
    probs = record["probabilities"]
    assert list(probs) == CLASSES and abs(sum(probs.values()) - 1) <= 1e-6
    assert record["label"] == max(probs, key=probs.get)
    assert record["score"] == pytest.approx(max(probs.values()))
    # Independent: the page truncated to its first 128 tokens (the model's window) by the HF
    # processor, one forward.
    boxes = [_norm(w["box"], page.size) for w in record["words"]]
    enc = predictor.processor(page, texts, boxes=boxes, truncation=True, max_length=128,
                              return_tensors="pt")
    full = predictor.processor.tokenizer(texts, boxes=boxes)["input_ids"]
    assert enc["input_ids"].shape[1] == 128 < len(full)  # the page is longer: truncation matters
    assert record["windows"] == 1
    with torch.no_grad():
        out = predictor.model(**{k: enc[k] for k in ("input_ids", "bbox", "pixel_values")})
    want = _softmax(out.logits[0].numpy())
    assert np.abs(want - np.array(list(probs.values()))).max() <= 1e-4


def test_qa_model_on_a_docvqa_page(qa_model):
    question = json.loads((DATA / "docvqa/val_v1.0_sample.json").read_text())
    question = next(q["question"] for q in question["data"] if q["image"].endswith("ffhx0227_1.png"))
    page = Image.open(DOCVQA_PAGE).convert("RGB")
    record = Predictor(qa_model).predict_image(DOCVQA_PAGE, question=question)
    words = record["words"]
    assert [w["text"] for w in words] == _tesseract_words(page)
    assert record["windows"] > 1 and record["question"] == question
    answer = record["answer"]
    assert 1 <= len(answer["words"]) <= 30 and 0 < answer["score"] <= 1
    assert answer["words"] == list(range(answer["words"][0], answer["words"][-1] + 1))
    assert answer["text"] == " ".join(words[i]["text"] for i in answer["words"])
    assert answer["boxes"] == [words[i]["box"] for i in answer["words"]]
    with pytest.raises(AetnetError, match="--question"):
        Predictor(qa_model).predict_image(page)


def test_group_entities_hand_worked():
    words = ["Date", ":", "12/10", "To", "Bob", "Fax", "x"]
    boxes = [[i * 10, 0, i * 10 + 8, 5 + i] for i in range(7)]
    labels = ["B-QUESTION", "I-QUESTION", "B-ANSWER", "I-QUESTION", "I-QUESTION", "B-QUESTION", "O"]
    ents = group_entities(words, boxes, labels)
    assert [(e["type"], e["text"], e["words"]) for e in ents] == [
        ("QUESTION", "Date :", [0, 1]), ("ANSWER", "12/10", [2]), ("QUESTION", "To Bob", [3, 4]),
        ("QUESTION", "Fax", [5])]
    assert ents[2]["box"] == [30, 0, 48, 9]


def test_line_segments_hand_worked():
    # Two words close on a line, a wide gap (a form value), then a word on the next line.
    boxes = [[0, 0, 40, 10], [45, 1, 80, 11], [200, 0, 240, 10], [0, 30, 30, 40]]
    ids, seg_boxes = line_segments(boxes)
    assert ids == [0, 0, 1, 2]
    assert seg_boxes == {0: [0, 0, 80, 11], 1: [200, 0, 240, 10], 2: [0, 30, 30, 40]}


def _two_page_pdf(path: Path) -> list[str]:
    font = ImageFont.load_default(size=48)
    texts = ["INVOICE NUMBER 4711", "TOTAL AMOUNT 250"]
    pages = []
    for text in texts:
        page = Image.new("RGB", (850, 400), "white")
        ImageDraw.Draw(page).text((60, 150), text, fill="black", font=font)
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=100)
    return texts


def test_two_page_pdf_with_cli_and_visualize(funsd_run, tmp_path):
    import pypdfium2 as pdfium

    pdf = tmp_path / "letter.pdf"
    texts = _two_page_pdf(pdf)
    out = tmp_path / "out"
    assert main(["predict", str(funsd_run), str(pdf), "--output", str(out), "--visualize"]) == 0
    records = json.loads((out / "letter.json").read_text())
    assert [r["page"] for r in records] == [1, 2]
    doc = pdfium.PdfDocument(str(pdf))
    for i, (record, text) in enumerate(zip(records, texts)):
        rendered = doc[i].render(scale=PDF_DPI / 72).to_pil()
        words = [w["text"] for w in record["words"]]
        assert words == _tesseract_words(rendered)
        assert words[0] == text.split()[0]
        png = Image.open(out / f"letter-page{i + 1}.png")
        assert png.size == tuple(record["size"]) == rendered.size
        assert np.abs(np.asarray(png, dtype=int) - np.asarray(rendered.convert("RGB"), dtype=int)).max() > 0
    doc.close()


def _empty_pdf(path: Path) -> None:
    """A valid PDF whose page tree is empty, written by hand."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 3\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size 3 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))


@pytest.mark.parametrize("case", ["missing", "corrupt_png", "not_a_pdf", "empty_pdf", "text_file"])
def test_bad_inputs_raise_one_data_error(funsd_run, tmp_path, case):
    path = tmp_path / {"missing": "nope.png", "corrupt_png": "bad.png", "not_a_pdf": "x.pdf",
                       "empty_pdf": "empty.pdf", "text_file": "notes.txt"}[case]
    if case == "corrupt_png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    elif case == "not_a_pdf":
        path.write_text("this is not a PDF")
    elif case == "empty_pdf":
        _empty_pdf(path)
    elif case == "text_file":
        path.write_text("hello")
    with pytest.raises(DataError) as info:
        Predictor(funsd_run).predict_file(path)
    assert str(path) in str(info.value)


def test_cli_reports_a_missing_file_without_traceback(funsd_run, tmp_path, capsys):
    assert main(["predict", str(funsd_run), str(tmp_path / "missing.pdf")]) == 2
    err = capsys.readouterr().err
    assert "missing.pdf" in err and "does not exist" in err and "Traceback" not in err


def test_ocr_settings_default_to_training_and_warn_when_changed(funsd_run, caplog):
    assert (Predictor(funsd_run).ocr_lang, Predictor(funsd_run).ocr_psm) == ("eng", 3)
    with caplog.at_level(logging.WARNING, logger="aetnet.predict.predictor"):
        predictor = Predictor(funsd_run, ocr_psm=6)
    assert predictor.ocr_psm == 6 and "psm 6 differs" in caplog.text
