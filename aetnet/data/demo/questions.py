"""Synthetic DocVQA: pages of facts, official v1.0 question files and Azure-format OCR."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from aetnet.data.demo.drawing import Canvas, seeded_rng, write_json
from aetnet.data.demo.vocabulary import DOC_TITLES, DOCVQA_FACTS, FORM_NOTES, LETTER_SENTENCES, field_value
from aetnet.data.documents.boxes import union_box

logger = logging.getLogger(__name__)


def _ocr_box(box: list[int]) -> list[int]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1, y0, x1, y1, x0, y1]  # clockwise from the top-left corner, as Azure OCR


def _docvqa_page(rng: random.Random) -> tuple[Canvas, list[tuple[str, str]]]:
    """A page of ``label: value`` facts and filler text; returns it with (question, answer) pairs."""
    c = Canvas(600, 800)
    c.text(rng.randint(40, 200), rng.randint(30, 60), rng.choice(DOC_TITLES), 26)
    facts = rng.sample(DOCVQA_FACTS, rng.randint(4, 7))
    x, y, step = rng.randint(40, 120), rng.randint(110, 160), rng.randint(30, 44)
    if rng.random() < 0.5:
        y = c.paragraph(x, y, rng.choice(FORM_NOTES), 16, 600 - x - 40, 24) + 20
    qas = []
    for label, kind, questions in facts:
        value = field_value(kind, rng)
        c.text(x, y, f"{label} {value}", 20)
        y += step
        qas.append((rng.choice(questions), value))
    c.paragraph(x, y + 20, " ".join(rng.sample(LETTER_SENTENCES, 2)), 16, 600 - x - 40, 24)
    return c, rng.sample(qas, rng.randint(2, min(4, len(qas))))


def make_docvqa_demo(root: Path, n_pages: int = 32, seed: int = 0) -> Path:
    """Writes synthetic DocVQA: pages, official v1.0 question files and official-format OCR.

    Files: ``root/documents/<doc>_1.png``, ``root/ocr_results/<doc>_1.json`` (Azure Read format
    with the true word boxes, so the demo needs no Tesseract), ``root/train_v1.0.json`` and
    ``root/val_v1.0.json`` (the last quarter of the pages). Every answer appears verbatim on its
    page as consecutive OCR words.

    Args:
        root: output folder (created).
        n_pages: number of pages, split 3:1 into train and val.
        seed: generation seed.

    Returns:
        ``root``.
    """
    root = Path(root)
    (root / "documents").mkdir(parents=True, exist_ok=True)
    (root / "ocr_results").mkdir(parents=True, exist_ok=True)
    n_val = max(1, n_pages // 4) if n_pages > 1 else 0
    data: dict[str, list[dict]] = {"train": [], "val": []}
    qid = 10000
    for p in range(n_pages):
        split = "train" if p < n_pages - n_val else "val"
        rng = seeded_rng(seed, "docvqa", p)
        ucsf = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(4)) + f"{p:04d}"
        canvas, qas = _docvqa_page(rng)
        canvas.img.save(root / "documents" / f"{ucsf}_1.png")
        lines = [{"boundingBox": _ocr_box(union_box([b for _, b in ln])),
                  "text": " ".join(w for w, _ in ln),
                  "words": [{"boundingBox": _ocr_box(b), "text": w} for w, b in ln]}
                 for ln in canvas.lines if ln]
        write_json(root / "ocr_results" / f"{ucsf}_1.json", {
            "status": "Succeeded",
            "recognitionResults": [{"page": 1, "clockwiseOrientation": 0, "width": 600,
                                    "height": 800, "unit": "pixel", "lines": lines}]})
        for question, answer in qas:
            data[split].append({
                "questionId": qid, "question": question, "image": f"documents/{ucsf}_1.png",
                "docId": 5000 + p, "ucsf_document_id": ucsf, "ucsf_document_page_no": "1",
                "answers": [answer], "data_split": split})
            qid += 1
    for split, rows in data.items():
        write_json(root / f"{split}_v1.0.json", {"dataset_name": "docvqa", "dataset_split": split,
                                                 "dataset_version": "1.0", "data": rows})
    logger.info("wrote DocVQA demo (%d pages) to %s", n_pages, root)
    return root
