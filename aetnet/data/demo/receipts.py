"""Synthetic CORD: receipts in CORD's original JSON layout (``valid_line``, ``gt_parse``, quads)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from PIL import Image, ImageDraw

from aetnet.data.demo.drawing import WordBox, demo_font, draw_words, seeded_rng, text_width, write_json
from aetnet.data.demo.vocabulary import (
    CASH_KEYS,
    CHANGE_KEYS,
    MENU_ITEMS,
    RECEIPT_FOOTERS,
    STORES,
    SUBTOTAL_KEYS,
    TAX_KEYS,
    TOTAL_KEYS,
    field_value,
)

logger = logging.getLogger(__name__)


def _quad(box: list[int]) -> dict[str, int]:
    x0, y0, x1, y1 = box
    return {"x1": x0, "y1": y0, "x2": x1, "y2": y0, "x3": x1, "y3": y1, "x4": x0, "y4": y1}


def _cord_receipt(rng: random.Random, split: str, image_id: int) -> tuple[Image.Image, dict]:
    """One receipt: store lines (unannotated, as in CORD), menu, sub-total and total blocks."""
    items = []
    for nm in rng.sample(MENU_ITEMS, rng.randint(1, 6)):
        cnt, unit = rng.choice((1, 1, 1, 2, 2, 3)), rng.randint(8, 120) * 1000
        items.append((str(cnt), nm, f"{cnt * unit:,}", cnt * unit))
    subtotal = sum(it[3] for it in items)
    tax = subtotal // 10 if rng.random() < 0.7 else 0
    total = subtotal + tax
    pay = [("sub_total.subtotal_price", rng.choice(SUBTOTAL_KEYS), subtotal)]
    pay += [("sub_total.tax_price", rng.choice(TAX_KEYS), tax)] if tax else []
    pay.append(("total.total_price", rng.choice(TOTAL_KEYS), total))
    if rng.random() < 0.7:
        cash = -(-total // 50000) * 50000
        pay += [("total.cashprice", rng.choice(CASH_KEYS), cash),
                ("total.changeprice", rng.choice(CHANGE_KEYS), cash - total)]
    width, lh, size = rng.choice((360, 400, 440)), rng.randint(24, 28), 16
    height = 40 + lh * (len(items) + len(pay) + 7)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    lines, symbols, gt = [], [], {"menu": [], "sub_total": {}, "total": {}}
    row_id, group, y = rng.randint(1_000_000, 3_000_000), 3, 20

    def centered(text: str) -> None:
        draw_words(draw, (width - text_width(draw, text, size)) // 2, y, text, size)

    def separator() -> None:
        draw.text((16, y), "-" * 40, font=demo_font(size), fill=0)
        box = [int(v) for v in draw.textbbox((16, y), "-" * 40, font=demo_font(size))]
        symbols.append([{"quad": _quad(box), "text": "-"}])

    def line(category: str, words: list[WordBox], n_keys: int = 0) -> None:
        lines.append({"words": [{"quad": _quad(b), "is_key": int(k < n_keys), "row_id": row_id,
                                 "text": w} for k, (w, b) in enumerate(words)],
                      "category": category, "group_id": group})

    for text in (rng.choice(STORES), field_value("address", rng)):
        centered(text)
        y += lh
    separator()
    y += lh
    for cnt, nm, price, _ in items:
        line("menu.cnt", draw_words(draw, 16, y, cnt, size))
        line("menu.nm", draw_words(draw, 46, y, nm, size))
        line("menu.price", draw_words(draw, width - 16 - text_width(draw, price, size), y, price, size))
        gt["menu"].append({"nm": nm, "cnt": cnt, "price": price})
        row_id, group, y = row_id + 1, group + 1, y + lh
    separator()
    y += lh
    for k, (category, key, amount) in enumerate(pay):
        if category.startswith("total.") and pay[k - 1][0].startswith("sub_total."):
            group += 1  # CORD gives the sub-total block one group and the total block the next
        value = f"{amount:,}"
        words = draw_words(draw, 16, y, key, size)
        words += draw_words(draw, width - 16 - text_width(draw, value, size), y, value, size)
        line(category, words, n_keys=len(key.split()))
        head, tail = category.split(".")
        gt[head][tail] = value
        row_id, y = row_id + 1, y + lh
    y += lh // 2
    centered(rng.choice(RECEIPT_FOOTERS))
    ann = {"gt_parse": gt,
           "meta": {"version": "1.0.0", "split": split, "image_id": image_id,
                    "image_size": {"width": width, "height": height}},
           "valid_line": lines, "roi": _quad([4, 4, width - 5, height - 5]),
           "repeating_symbol": symbols, "dontcare": []}
    return img, ann


def make_cord_demo(root: Path, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """Writes synthetic receipts in CORD's original layout.

    Files: ``root/{train,test}/json/receipt_XXXXX.json`` (``valid_line``, ``meta``, ``gt_parse``,
    ``roi``, ``repeating_symbol``, ``dontcare``) and ``root/{train,test}/image/receipt_XXXXX.png``.
    Categories used: ``menu.{cnt,nm,price}``, ``sub_total.{subtotal_price,tax_price}``,
    ``total.{total_price,cashprice,changeprice}``; key words (``TOTAL``) carry ``is_key=1``.

    Args:
        root: output folder (created).
        n_train: number of training receipts.
        n_test: number of test receipts.
        seed: generation seed.

    Returns:
        ``root``.
    """
    root = Path(root)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split / "json").mkdir(parents=True, exist_ok=True)
        (root / split / "image").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, ann = _cord_receipt(seeded_rng(seed, "cord", split, i), split, i)
            img.save(root / split / "image" / f"receipt_{i:05d}.png")
            write_json(root / split / "json" / f"receipt_{i:05d}.json", ann)
    logger.info("wrote CORD demo (%d train, %d test) to %s", n_train, n_test, root)
    return root
