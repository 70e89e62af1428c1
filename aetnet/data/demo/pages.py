"""Synthetic RVL-CDIP: letters, memos, invoices and forms as TIFFs with the release's label files."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from PIL import Image, features

from aetnet.data.demo.drawing import Canvas, seeded_rng, text_width
from aetnet.data.demo.vocabulary import (
    CHOICES,
    FIELDS,
    FIRST_NAMES,
    LAST_NAMES,
    LETTER_SENTENCES,
    MEMO_SENTENCES,
    MEMO_SUBJECTS,
    RVL_CDIP_CLASSES,
    RVL_FORM_TITLES,
    field_value,
)
from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)


def _rvl_letter(c: Canvas, rng: random.Random) -> None:
    c.center(40, rng.choice(CHOICES["company"]), 28)
    c.center(80, f"{field_value('address', rng)}, {rng.choice(CHOICES['city'])}", 16)
    c.draw.line([(50, 110), (550, 110)], fill=0, width=2)
    c.right(550, 140, field_value("longdate", rng), 20)
    last = rng.choice(LAST_NAMES)
    y = 190
    for line in (f"{rng.choice(FIRST_NAMES)} {last}", rng.choice(CHOICES["company"]),
                 rng.choice(CHOICES["city"])):
        c.text(60, y, line, 20)
        y += 28
    c.text(60, y + 20, f"Dear {rng.choice(('Mr.', 'Ms.', 'Dr.'))} {last},", 20)
    y += 70
    for _ in range(2):
        y = c.paragraph(60, y, " ".join(rng.sample(LETTER_SENTENCES, 2)), 20, 480, 28) + 16
    c.text(60, y, rng.choice(("Sincerely,", "Yours truly,", "Best regards,")), 20)
    c.text(60, y + 60, field_value("name", rng), 20)
    c.text(60, y + 88, rng.choice(CHOICES["title"]), 20)


def _rvl_memo(c: Canvas, rng: random.Random) -> None:
    c.center(50, "MEMORANDUM", 32)
    y = 130
    for label, value in (("To:", field_value("name", rng)), ("From:", field_value("name", rng)),
                         ("Date:", field_value("longdate", rng)),
                         ("Subject:", rng.choice(MEMO_SUBJECTS))):
        c.text(60, y, label, 20)
        c.text(170, y, value, 20)
        y += 36
    c.draw.line([(50, y + 6), (550, y + 6)], fill=0, width=2)
    y += 36
    for _ in range(2):
        y = c.paragraph(60, y, " ".join(rng.sample(MEMO_SENTENCES, 2)), 20, 480, 28) + 16
    c.text(60, y + 10, f"cc: {field_value('name', rng)}", 18)


def _rvl_invoice(c: Canvas, rng: random.Random) -> None:
    c.text(50, 40, "INVOICE", 34)
    c.right(550, 50, rng.choice(CHOICES["company"]), 20)
    c.right(550, 78, rng.choice(CHOICES["city"]), 18)
    c.text(50, 140, f"Invoice No. {field_value('number', rng)}", 20)
    c.text(50, 172, f"Date: {field_value('date', rng)}", 20)
    c.text(50, 204, f"Bill To: {rng.choice(CHOICES['company'])}", 20)
    y, total, cols = 260, 0.0, (60, 300, 370, 540)
    rows = [(p, rng.randint(1, 20), rng.randint(4, 400) + rng.choice((0.0, 0.5, 0.25)))
            for p in rng.sample(CHOICES["product"], rng.randint(3, 6))]
    for k, row in enumerate([("Item", "Qty", "Price", "Amount")] + rows):
        c.draw.line([(50, y - 4), (550, y - 4)], fill=0, width=1)
        if k == 0:
            cells = row
        else:
            amount = row[1] * row[2]
            total += amount
            cells = (row[0], str(row[1]), f"{row[2]:,.2f}", f"{amount:,.2f}")
        c.text(cols[0], y, cells[0], 18)
        for x, cell in zip(cols[1:3], cells[1:3]):
            c.text(x, y, cell, 18)
        c.right(cols[3], y, cells[3], 18)
        y += 34
    c.draw.line([(50, y - 4), (550, y - 4)], fill=0, width=1)
    c.draw.rectangle([50, 256, 550, y - 4], outline=0)
    c.text(330, y + 10, "Total", 20)
    c.right(540, y + 10, f"${total:,.2f}", 20)
    c.text(50, y + 70, "Payment is due within thirty days.", 18)


def _rvl_form(c: Canvas, rng: random.Random) -> None:
    c.center(40, rng.choice(RVL_FORM_TITLES), 28)
    fields = rng.sample(FIELDS, 2 * rng.randint(3, 5))
    for k, (question, kind) in enumerate(fields):
        x, y = 40 + (k % 2) * 265, 110 + (k // 2) * 80
        c.draw.rectangle([x, y, x + 255, y + 70], outline=0, width=2)
        c.text(x + 8, y + 6, question, 16)
        value = field_value(kind, rng)
        if text_width(c.draw, value, 20) < 235:
            c.text(x + 8, y + 34, value, 20)
    y = 110 + (len(fields) // 2) * 80 + 30
    c.text(40, y, "Approved:", 20)
    for x, word in ((170, "Yes"), (270, "No")):
        c.draw.rectangle([x, y + 2, x + 20, y + 22], outline=0, width=2)
        c.text(x + 30, y, word, 20)
    x = 170 if rng.random() < 0.5 else 270  # tick one box
    c.draw.line([(x + 4, y + 6), (x + 16, y + 18)], fill=0, width=2)
    c.draw.line([(x + 16, y + 6), (x + 4, y + 18)], fill=0, width=2)
    c.draw.line([(40, y + 110), (300, y + 110)], fill=0, width=1)
    c.text(40, y + 116, "Signature", 16)


_RVL_PAGES = {"letter": _rvl_letter, "memo": _rvl_memo, "invoice": _rvl_invoice, "form": _rvl_form}


def render_rvl_cdip_page(label: str, rng: random.Random) -> tuple[Image.Image, list[str]]:
    """Renders one 600x800 grayscale page of class ``label``.

    Args:
        label: one of ``"letter"``, ``"form"``, ``"invoice"``, ``"memo"``.
        rng: source of randomness (layout, vocabulary, values).

    Returns:
        The page image and the words drawn on it, in drawing order (the OCR ground truth).

    Raises:
        AetnetError: for a class the demo cannot draw.
    """
    if label not in _RVL_PAGES:
        raise AetnetError(f"the RVL-CDIP demo cannot draw class '{label}'; choose from "
                          f"{', '.join(sorted(_RVL_PAGES))}")
    canvas = Canvas(600, 800)
    _RVL_PAGES[label](canvas, rng)
    return canvas.img, canvas.words()


def make_rvl_cdip_demo(root: Path, n_per_class: int = 8,
                       classes: tuple[str, ...] = ("letter", "form", "invoice", "memo"),
                       n_eval_per_class: int = 2, seed: int = 0) -> Path:
    """Writes synthetic pages in RVL-CDIP's release layout.

    Files: grayscale TIFFs ``root/images/<split>/<id>.tif`` and ``root/labels/{train,val,test}.txt``
    with lines ``images/<split>/<id>.tif <class id>`` (official 16-class ids, e.g. letter=0,
    form=1, invoice=11, memo=15). Paths are relative to ``root``, as in the shared sample.

    Args:
        root: output folder (created).
        n_per_class: training pages per class.
        classes: class names to draw (see :func:`render_rvl_cdip_page`).
        n_eval_per_class: validation pages and test pages per class.
        seed: generation seed.

    Returns:
        ``root``.
    """
    root = Path(root)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    # deflate keeps the cache small; plain TIFF still works where Pillow lacks libtiff
    compression = "tiff_deflate" if features.check("libtiff") else None
    for code, (split, n) in enumerate((("train", n_per_class), ("val", n_eval_per_class),
                                       ("test", n_eval_per_class))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            for label in classes:
                cid = RVL_CDIP_CLASSES.index(label) if label in RVL_CDIP_CLASSES else -1
                img, _ = render_rvl_cdip_page(label, seeded_rng(seed, "rvl-cdip", split, label, i))
                rel = f"images/{split}/7{code}{cid:02d}{i:04d}.tif"
                img.save(root / rel, format="TIFF", compression=compression)
                rows.append(f"{rel} {cid}")
        (root / "labels" / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    logger.info("wrote RVL-CDIP demo (%d classes) to %s", len(classes), root)
    return root
