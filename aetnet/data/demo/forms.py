"""Synthetic FUNSD: forms of question/answer fields with FUNSD's ``form`` schema, ``linking`` included."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from PIL import Image, ImageDraw

from aetnet.data.demo.drawing import WordBox, draw_words, seeded_rng, text_width, wrap, write_json
from aetnet.data.demo.vocabulary import FIELDS, FORM_CODES, FORM_HEADERS, FORM_NOTES, field_value
from aetnet.data.documents.boxes import union_box

logger = logging.getLogger(__name__)


def _funsd_page(rng: random.Random, with_empty: bool) -> tuple[Image.Image, dict]:
    """One synthetic form: a header, question/answer pairs, other text; FUNSD's ``form`` schema."""
    width, height = 500, 650
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    form: list[dict] = []

    def add(label: str, words: list[WordBox], box: list[int] | None = None) -> dict:
        ent = {"box": box or union_box([b for _, b in words]), "text": " ".join(w for w, _ in words),
               "label": label, "words": [{"box": b, "text": w} for w, b in words],
               "linking": [], "id": len(form)}
        form.append(ent)
        return ent

    def link(a: dict, b: dict) -> None:
        a["linking"].append([a["id"], b["id"]])
        b["linking"].append([a["id"], b["id"]])

    header_text = rng.choice(FORM_HEADERS)
    hx = (width - text_width(draw, header_text, 17)) // 2 if rng.random() < 0.6 else rng.randint(20, 60)
    header = add("header", draw_words(draw, hx, rng.randint(14, 34), header_text, 17))
    y = header["box"][3] + rng.randint(10, 20)
    if rng.random() < 0.5:  # a form code line, as on many FUNSD pages
        code = f"{rng.choice(FORM_CODES)} {field_value('code', rng)}"
        add("other", draw_words(draw, rng.randint(20, 300), y, code, 11))
        y += rng.randint(16, 24)
    fields = rng.sample(FIELDS, rng.randint(4, 9))
    qx, step = rng.randint(20, 60), rng.randint(27, 38)
    aligned = rng.random() < 0.5  # answers in one column, or right after their question
    col = qx + max(text_width(draw, q, 13) for q, _ in fields) + 14
    empty_at = rng.randrange(len(fields)) if with_empty else -1
    for k, (question, kind) in enumerate(fields):
        y += step
        q = add("question", draw_words(draw, qx, y, question, 13))
        ax = col if aligned else q["box"][2] + rng.randint(8, 20)
        if k == empty_at:  # an unfilled field: FUNSD keeps such blanks as entities without words
            a = add("answer", [], [ax, y + 2, ax + 90, y + 16])
        else:
            a = add("answer", draw_words(draw, ax, y, field_value(kind, rng), 13))
        draw.line([(ax - 2, y + 19), (max(a["box"][2], ax + 90) + 4, y + 19)], fill=110, width=1)
        link(q, a)
        if rng.random() < 0.35:
            link(header, q)
    y += step + rng.randint(10, 30)
    for text in rng.sample(FORM_NOTES, rng.randint(1, 2)):
        for line in wrap(draw, text, 11, width - 2 * qx):
            if y < height - 40:
                add("other", draw_words(draw, qx, y, line, 11))
                y += 16
    add("other", draw_words(draw, width - 90, height - 28, "Page 1 of 1", 10))
    draw.rectangle([6, 6, width - 7, height - 7], outline=150)
    return img, {"form": form}


def make_funsd_demo(root: Path, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """Writes a synthetic FUNSD in the original layout.

    Files: ``root/dataset/{training_data,testing_data}/{annotations/<id>.json, images/<id>.png}``,
    grayscale 500x650 pages. Every fourth page of a split (the first included) has one answer
    with empty text and no words, as real FUNSD does.

    Args:
        root: output folder (created).
        n_train: number of training forms.
        n_test: number of test forms.
        seed: generation seed.

    Returns:
        ``root`` (the folder that holds ``dataset/``).
    """
    root = Path(root)
    for code, (split, n) in enumerate((("training_data", n_train), ("testing_data", n_test))):
        ann_dir, img_dir = root / "dataset" / split / "annotations", root / "dataset" / split / "images"
        ann_dir.mkdir(parents=True, exist_ok=True)
        img_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"8{code}{i:08d}"
            img, ann = _funsd_page(seeded_rng(seed, "funsd", split, i), with_empty=i % 4 == 0)
            img.save(img_dir / f"{stem}.png")
            write_json(ann_dir / f"{stem}.json", ann)
    logger.info("wrote FUNSD demo (%d train, %d test) to %s", n_train, n_test, root)
    return root
