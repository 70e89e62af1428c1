"""Synthetic demo datasets, generated offline in each benchmark's original release format.

The real FUNSD, CORD, RVL-CDIP and DocVQA releases may not be redistributed, yet ``aetnet finetune
<task> --demo`` must run end to end without a network. This module renders small synthetic pages
with PIL and writes them to disk exactly as the real releases lay them out, so the demo goes
through the same readers as real data. Every generator is deterministic: the same seed gives the
same JSON and the same image bytes, because each page draws from its own string-seeded
``random.Random`` (string seeds hash with SHA-512, independent of ``PYTHONHASHSEED``).

Word boxes are the true rendered extents (``ImageDraw.textbbox``), so boxes and pixels agree.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

DEMO_VERSION = "v1"
RVL_CDIP_CLASSES = (
    "letter", "form", "email", "handwritten", "advertisement", "scientific report",
    "scientific publication", "specification", "file folder", "news article", "budget", "invoice",
    "presentation", "questionnaire", "resume", "memo",
)  # the official 16-class order of labels/readme.txt: a class id is its index here


# ------------------------------------------------------------------------------------ vocabulary
def _v(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split("|"))


FIRST_NAMES = _v("John|Mary|Robert|Linda|James|Susan|David|Karen|Michael|Nancy|William|Carol|"
                 "Thomas|Helen|Richard|Ruth|Charles|Janet|Steven|Laura|Paul|Diane|Mark|Anne")
LAST_NAMES = _v("Smith|Johnson|Brown|Miller|Davis|Wilson|Moore|Taylor|Anderson|Thomas|Jackson|"
                "White|Harris|Martin|Thompson|Clark|Lewis|Walker|Hall|Allen|Young|King|Wright|Green")
MONTHS = _v("January|February|March|April|May|June|July|August|September|October|November|"
            "December")
STREETS = _v("Main|Oak|Maple|Park|Pine|Cedar|Elm|Lake|Hill|Washington|Market|Church|Spring|River")
STREET_TYPES = _v("Street|Avenue|Road|Drive|Lane|Boulevard")
CODE_PREFIXES = _v("REF|PO|INV|ACC|DOC|REQ")
_CHOICES = {
    "company": _v("Acme Corp|Globex Inc|Initech Ltd|Summit Supply Co|Northwind Traders|"
                  "Blue River Labs|Atlas Paper Co|Pioneer Foods Inc|Harbor Research Group|"
                  "Keystone Office Products|Redwood Consulting|Union Printing Co"),
    "city": _v("Boston|Chicago|Denver|Atlanta|Richmond|Raleigh|Dallas|Seattle|Portland|Phoenix|"
               "Memphis|Louisville|Columbus|Baltimore"),
    "department": _v("Research|Marketing|Accounting|Purchasing|Legal|Sales|Personnel|Quality Control|"
                     "Public Affairs|Operations"),
    "title": _v("Manager|Director|Assistant|Analyst|Vice President|Supervisor|Coordinator|Chemist|"
                "Accountant|Sales Representative"),
    "product": _v("Office Supplies|Printer Paper|Lab Equipment|Filing Cabinets|Computer Software|"
                  "Shipping Boxes|Toner Cartridges|Desk Chairs|Sample Kits|Display Materials"),
    "status": _v("Approved|Pending|Completed|In Progress|On Hold|Rejected"),
    "method": _v("Mail|Fax|Courier|Hand Delivery|Overnight"),
}
FORM_HEADERS = _v("PURCHASE ORDER FORM|EMPLOYEE INFORMATION|RESEARCH PROPOSAL REQUEST|"
                  "FAX TRANSMITTAL|EXPENSE REPORT|PROJECT APPROVAL FORM|CUSTOMER ACCOUNT FORM|"
                  "SHIPPING REQUEST|BUDGET REQUEST|VENDOR REGISTRATION")
FORM_CODES = _v("Form|Document|Control No.")
FIELDS = (("Name:", "name"), ("Date:", "date"), ("To:", "name"), ("From:", "name"),
          ("Phone:", "phone"), ("Fax:", "phone"), ("Company:", "company"),
          ("Address:", "address"), ("City:", "city"), ("Account No.:", "number"),
          ("Department:", "department"), ("Title:", "title"), ("Amount:", "money"),
          ("Total Cost:", "money"), ("Reference:", "code"), ("Approved By:", "name"),
          ("Quantity:", "qty"), ("Product:", "product"), ("Due Date:", "date"),
          ("Status:", "status"), ("Delivery Method:", "method"), ("Contact:", "name"))
FORM_NOTES = _v("Please return this form to the main office by the end of the month.|"
                "All information on this form is confidential.|"
                "Attach receipts for every expense over fifty dollars.|"
                "Use black ink and print clearly.|"
                "Questions about this form should be sent to the accounting department.|"
                "Keep one copy for your records.")
MENU_ITEMS = _v("Ice Tea|Hot Tea|Lemonade|Orange Juice|Coffee Latte|Iced Coffee|Mineral Water|"
                "Chicken Burger|Beef Burger|Fried Rice|Fried Noodles|Chicken Wings|French Fries|"
                "Caesar Salad|Garden Salad|Tomato Soup|Grilled Fish|Club Sandwich|Cheese Cake|"
                "Chocolate Cake|Banana Bread|Fruit Bowl|Pepper Steak|Spicy Tofu|Egg Roll|Milkshake")
SUBTOTAL_KEYS = _v("SUBTOTAL|Sub Total|Subtotal")
TAX_KEYS = _v("TAX|Tax 10%|PB1 10%")
TOTAL_KEYS = _v("TOTAL|Grand Total|Total")
CASH_KEYS = _v("CASH|Cash")
CHANGE_KEYS = _v("CHANGE|Change")
STORES = _v("Corner Cafe|Green Leaf Kitchen|Sunrise Bakery|City Noodle House|Harbor Grill|"
            "Golden Spoon|Maple Coffee Bar|Red Lantern Diner")
RECEIPT_FOOTERS = _v("THANK YOU|Thank you for your visit|Please come again")
LETTER_SENTENCES = _v(
    "Thank you for your letter regarding the proposed research program.|"
    "We are pleased to confirm that the samples were shipped last week.|"
    "I would like to thank you for meeting with our staff during your visit.|"
    "Please find enclosed a copy of the signed agreement for your files.|"
    "Our committee reviewed your request and has approved the funding.|"
    "If you have any questions, please do not hesitate to call me.|"
    "We look forward to working with you on this important project.|"
    "The results of the study will be presented at the annual meeting.")
MEMO_SENTENCES = _v(
    "The quarterly budget review will take place next Tuesday in the main conference room.|"
    "All department heads should submit their reports before the meeting.|"
    "Please note that the new travel policy takes effect on the first of the month.|"
    "Copies of the revised schedule are available from the personnel office.|"
    "This memo replaces the earlier notice about the office move.|"
    "Contact the project coordinator if your group needs additional staff.")
MEMO_SUBJECTS = _v("Budget Review|Travel Policy|Office Move|Staff Meeting|Project Schedule|"
                   "Quarterly Report|Safety Training")
RVL_FORM_TITLES = _v("APPLICATION FORM|REGISTRATION FORM|REQUEST FORM|ORDER FORM")
DOC_TITLES = _v("INVOICE|STATEMENT|ORDER SUMMARY|ACCOUNT NOTICE|PAYMENT RECORD")
DOCVQA_FACTS = (  # (line label, value kind, questions whose answer is the value)
    ("Invoice number:", "number", ("What is the invoice number?", "Which invoice number is given?")),
    ("Date:", "longdate", ("What is the date mentioned in this document?", "What is the date?")),
    ("Total:", "money", ("What is the total amount?", "How much is the total?")),
    ("Company:", "company", ("What is the name of the company?", "Which company is mentioned?")),
    ("Contact:", "name", ("Who is the contact person?", "What is the name of the contact?")),
    ("Phone:", "phone", ("What is the phone number?",)),
    ("City:", "city", ("In which city is the office located?",)),
    ("Department:", "department", ("Which department is mentioned?",)),
    ("Account number:", "number", ("What is the account number?",)),
    ("Reference:", "code", ("What is the reference code?",)),
)

WordBox = tuple[str, list[int]]


def corpus_path() -> Path:
    """Path of the plain-English text that trains the tiny offline BPE tokenizer (``--base tiny``)."""
    return Path(__file__).with_name("corpus.txt")


# --------------------------------------------------------------------------------------- drawing
@functools.cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or built without FreeType
        logger.warning("FreeType unavailable: demo pages use Pillow's small bitmap font")
        return ImageFont.load_default()


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random("/".join([str(seed), *map(str, parts)]))


def _advance(draw: ImageDraw.ImageDraw, word: str, size: int) -> int:
    return int(round(draw.textlength(word, font=_font(size))))


def _gap(draw: ImageDraw.ImageDraw, size: int) -> int:
    return _advance(draw, " ", size) + max(1, size // 8)  # the default font's space reads as no gap


def _width(draw: ImageDraw.ImageDraw, text: str, size: int) -> int:
    """Width that :func:`_draw_words` gives ``text`` (used to centre, right-align and wrap)."""
    words = text.split()
    return sum(_advance(draw, w, size) for w in words) + _gap(draw, size) * max(0, len(words) - 1)


def _draw_words(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, size: int) -> list[WordBox]:
    """Draws ``text`` word by word from ``(x, y)``; returns each word with its inked pixel box."""
    font, out, gap = _font(size), [], _gap(draw, size)
    for word in text.split():
        draw.text((x, y), word, font=font, fill=0)
        x0, y0, x1, y1 = draw.textbbox((x, y), word, font=font)
        out.append((word, [int(x0), int(y0), int(x1), int(y1)]))
        x += _advance(draw, word, size) + gap
    return out


def _union(boxes: list[list[int]]) -> list[int]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _wrap(draw: ImageDraw.ImageDraw, text: str, size: int, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and _width(draw, trial, size) > width:
            lines.append(line)
            trial = word
        line = trial
    return lines + ([line] if line else [])


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _money(rng: random.Random, lo: int = 20, hi: int = 9000) -> str:
    return f"${rng.randint(lo, hi) * 5 / 4:,.2f}"  # quarters, so cents vary: $1,250.75


def _field_value(kind: str, rng: random.Random) -> str:
    """A value for a form field of vocabulary kind ``kind`` (see ``FIELDS``)."""
    if kind == "name":
        return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    if kind == "date":
        return f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1985, 1999)}"
    if kind == "longdate":
        return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1985, 1999)}"
    if kind == "phone":
        return f"({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}"
    if kind == "address":
        return f"{rng.randint(10, 9999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"
    if kind == "money":
        return _money(rng)
    if kind == "number":
        return str(rng.randint(1000, 99999))
    if kind == "code":
        return f"{rng.choice(CODE_PREFIXES)}-{rng.randint(100, 9999)}"
    if kind == "qty":
        return str(rng.randint(1, 250))
    return rng.choice(_CHOICES[kind])  # company, city, department, title, product


# ----------------------------------------------------------------------------------------- FUNSD
def _funsd_page(rng: random.Random, with_empty: bool) -> tuple[Image.Image, dict]:
    """One synthetic form: a header, question/answer pairs, other text; FUNSD's ``form`` schema."""
    width, height = 500, 650
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    form: list[dict] = []

    def add(label: str, words: list[WordBox], box: list[int] | None = None) -> dict:
        ent = {"box": box or _union([b for _, b in words]), "text": " ".join(w for w, _ in words),
               "label": label, "words": [{"box": b, "text": w} for w, b in words],
               "linking": [], "id": len(form)}
        form.append(ent)
        return ent

    def link(a: dict, b: dict) -> None:
        a["linking"].append([a["id"], b["id"]])
        b["linking"].append([a["id"], b["id"]])

    header_text = rng.choice(FORM_HEADERS)
    hx = (width - _width(draw, header_text, 17)) // 2 if rng.random() < 0.6 else rng.randint(20, 60)
    header = add("header", _draw_words(draw, hx, rng.randint(14, 34), header_text, 17))
    y = header["box"][3] + rng.randint(10, 20)
    if rng.random() < 0.5:  # a form code line, as on many FUNSD pages
        code = f"{rng.choice(FORM_CODES)} {_field_value('code', rng)}"
        add("other", _draw_words(draw, rng.randint(20, 300), y, code, 11))
        y += rng.randint(16, 24)
    fields = rng.sample(FIELDS, rng.randint(4, 9))
    qx, step = rng.randint(20, 60), rng.randint(27, 38)
    aligned = rng.random() < 0.5  # answers in one column, or right after their question
    col = qx + max(_width(draw, q, 13) for q, _ in fields) + 14
    empty_at = rng.randrange(len(fields)) if with_empty else -1
    for k, (question, kind) in enumerate(fields):
        y += step
        q = add("question", _draw_words(draw, qx, y, question, 13))
        ax = col if aligned else q["box"][2] + rng.randint(8, 20)
        if k == empty_at:  # an unfilled field: FUNSD keeps such blanks as entities without words
            a = add("answer", [], [ax, y + 2, ax + 90, y + 16])
        else:
            a = add("answer", _draw_words(draw, ax, y, _field_value(kind, rng), 13))
        draw.line([(ax - 2, y + 19), (max(a["box"][2], ax + 90) + 4, y + 19)], fill=110, width=1)
        link(q, a)
        if rng.random() < 0.35:
            link(header, q)
    y += step + rng.randint(10, 30)
    for text in rng.sample(FORM_NOTES, rng.randint(1, 2)):
        for line in _wrap(draw, text, 11, width - 2 * qx):
            if y < height - 40:
                add("other", _draw_words(draw, qx, y, line, 11))
                y += 16
    add("other", _draw_words(draw, width - 90, height - 28, "Page 1 of 1", 10))
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
            img, ann = _funsd_page(_rng(seed, "funsd", split, i), with_empty=i % 4 == 0)
            img.save(img_dir / f"{stem}.png")
            _write_json(ann_dir / f"{stem}.json", ann)
    logger.info("wrote FUNSD demo (%d train, %d test) to %s", n_train, n_test, root)
    return root


# ------------------------------------------------------------------------------------------ CORD
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
        _draw_words(draw, (width - _width(draw, text, size)) // 2, y, text, size)

    def separator() -> None:
        draw.text((16, y), "-" * 40, font=_font(size), fill=0)
        box = [int(v) for v in draw.textbbox((16, y), "-" * 40, font=_font(size))]
        symbols.append([{"quad": _quad(box), "text": "-"}])

    def line(category: str, words: list[WordBox], n_keys: int = 0) -> None:
        lines.append({"words": [{"quad": _quad(b), "is_key": int(k < n_keys), "row_id": row_id,
                                 "text": w} for k, (w, b) in enumerate(words)],
                      "category": category, "group_id": group})

    for text in (rng.choice(STORES), _field_value("address", rng)):
        centered(text)
        y += lh
    separator()
    y += lh
    for cnt, nm, price, _ in items:
        line("menu.cnt", _draw_words(draw, 16, y, cnt, size))
        line("menu.nm", _draw_words(draw, 46, y, nm, size))
        line("menu.price", _draw_words(draw, width - 16 - _width(draw, price, size), y, price, size))
        gt["menu"].append({"nm": nm, "cnt": cnt, "price": price})
        row_id, group, y = row_id + 1, group + 1, y + lh
    separator()
    y += lh
    for k, (category, key, amount) in enumerate(pay):
        if category.startswith("total.") and pay[k - 1][0].startswith("sub_total."):
            group += 1  # CORD gives the sub-total block one group and the total block the next
        value = f"{amount:,}"
        words = _draw_words(draw, 16, y, key, size)
        words += _draw_words(draw, width - 16 - _width(draw, value, size), y, value, size)
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
            img, ann = _cord_receipt(_rng(seed, "cord", split, i), split, i)
            img.save(root / split / "image" / f"receipt_{i:05d}.png")
            _write_json(root / split / "json" / f"receipt_{i:05d}.json", ann)
    logger.info("wrote CORD demo (%d train, %d test) to %s", n_train, n_test, root)
    return root


# -------------------------------------------------------------------------------------- RVL-CDIP
class _Canvas:
    """A white page that records every line of words it draws (the OCR ground truth)."""

    def __init__(self, width: int, height: int) -> None:
        self.img = Image.new("L", (width, height), 255)
        self.draw = ImageDraw.Draw(self.img)
        self.lines: list[list[WordBox]] = []

    def text(self, x: int, y: int, text: str, size: int) -> list[WordBox]:
        words = _draw_words(self.draw, x, y, text, size)
        self.lines.append(words)
        return words

    def right(self, x_end: int, y: int, text: str, size: int) -> list[WordBox]:
        return self.text(x_end - _width(self.draw, text, size), y, text, size)

    def center(self, y: int, text: str, size: int) -> list[WordBox]:
        return self.text((self.img.width - _width(self.draw, text, size)) // 2, y, text, size)

    def paragraph(self, x: int, y: int, text: str, size: int, width: int, lh: int) -> int:
        for line in _wrap(self.draw, text, size, width):
            if y + lh < self.img.height - 20:  # never draw past the bottom margin
                self.text(x, y, line, size)
                y += lh
        return y

    def words(self) -> list[str]:
        return [w for line in self.lines for w, _ in line]


def _rvl_letter(c: _Canvas, rng: random.Random) -> None:
    c.center(40, rng.choice(_CHOICES["company"]), 28)
    c.center(80, f"{_field_value('address', rng)}, {rng.choice(_CHOICES['city'])}", 16)
    c.draw.line([(50, 110), (550, 110)], fill=0, width=2)
    c.right(550, 140, _field_value("longdate", rng), 20)
    last = rng.choice(LAST_NAMES)
    y = 190
    for line in (f"{rng.choice(FIRST_NAMES)} {last}", rng.choice(_CHOICES["company"]),
                 rng.choice(_CHOICES["city"])):
        c.text(60, y, line, 20)
        y += 28
    c.text(60, y + 20, f"Dear {rng.choice(('Mr.', 'Ms.', 'Dr.'))} {last},", 20)
    y += 70
    for _ in range(2):
        y = c.paragraph(60, y, " ".join(rng.sample(LETTER_SENTENCES, 2)), 20, 480, 28) + 16
    c.text(60, y, rng.choice(("Sincerely,", "Yours truly,", "Best regards,")), 20)
    c.text(60, y + 60, _field_value("name", rng), 20)
    c.text(60, y + 88, rng.choice(_CHOICES["title"]), 20)


def _rvl_memo(c: _Canvas, rng: random.Random) -> None:
    c.center(50, "MEMORANDUM", 32)
    y = 130
    for label, value in (("To:", _field_value("name", rng)), ("From:", _field_value("name", rng)),
                         ("Date:", _field_value("longdate", rng)),
                         ("Subject:", rng.choice(MEMO_SUBJECTS))):
        c.text(60, y, label, 20)
        c.text(170, y, value, 20)
        y += 36
    c.draw.line([(50, y + 6), (550, y + 6)], fill=0, width=2)
    y += 36
    for _ in range(2):
        y = c.paragraph(60, y, " ".join(rng.sample(MEMO_SENTENCES, 2)), 20, 480, 28) + 16
    c.text(60, y + 10, f"cc: {_field_value('name', rng)}", 18)


def _rvl_invoice(c: _Canvas, rng: random.Random) -> None:
    c.text(50, 40, "INVOICE", 34)
    c.right(550, 50, rng.choice(_CHOICES["company"]), 20)
    c.right(550, 78, rng.choice(_CHOICES["city"]), 18)
    c.text(50, 140, f"Invoice No. {_field_value('number', rng)}", 20)
    c.text(50, 172, f"Date: {_field_value('date', rng)}", 20)
    c.text(50, 204, f"Bill To: {rng.choice(_CHOICES['company'])}", 20)
    y, total, cols = 260, 0.0, (60, 300, 370, 540)
    rows = [(p, rng.randint(1, 20), rng.randint(4, 400) + rng.choice((0.0, 0.5, 0.25)))
            for p in rng.sample(_CHOICES["product"], rng.randint(3, 6))]
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


def _rvl_form(c: _Canvas, rng: random.Random) -> None:
    c.center(40, rng.choice(RVL_FORM_TITLES), 28)
    fields = rng.sample(FIELDS, 2 * rng.randint(3, 5))
    for k, (question, kind) in enumerate(fields):
        x, y = 40 + (k % 2) * 265, 110 + (k // 2) * 80
        c.draw.rectangle([x, y, x + 255, y + 70], outline=0, width=2)
        c.text(x + 8, y + 6, question, 16)
        value = _field_value(kind, rng)
        if _width(c.draw, value, 20) < 235:
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
    canvas = _Canvas(600, 800)
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
                img, _ = render_rvl_cdip_page(label, _rng(seed, "rvl-cdip", split, label, i))
                rel = f"images/{split}/7{code}{cid:02d}{i:04d}.tif"
                img.save(root / rel, format="TIFF", compression=compression)
                rows.append(f"{rel} {cid}")
        (root / "labels" / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    logger.info("wrote RVL-CDIP demo (%d classes) to %s", len(classes), root)
    return root


# ---------------------------------------------------------------------------------------- DocVQA
def _ocr_box(box: list[int]) -> list[int]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1, y0, x1, y1, x0, y1]  # clockwise from the top-left corner, as Azure OCR


def _docvqa_page(rng: random.Random) -> tuple[_Canvas, list[tuple[str, str]]]:
    """A page of ``label: value`` facts and filler text; returns it with (question, answer) pairs."""
    c = _Canvas(600, 800)
    c.text(rng.randint(40, 200), rng.randint(30, 60), rng.choice(DOC_TITLES), 26)
    facts = rng.sample(DOCVQA_FACTS, rng.randint(4, 7))
    x, y, step = rng.randint(40, 120), rng.randint(110, 160), rng.randint(30, 44)
    if rng.random() < 0.5:
        y = c.paragraph(x, y, rng.choice(FORM_NOTES), 16, 600 - x - 40, 24) + 20
    qas = []
    for label, kind, questions in facts:
        value = _field_value(kind, rng)
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
        rng = _rng(seed, "docvqa", p)
        ucsf = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(4)) + f"{p:04d}"
        canvas, qas = _docvqa_page(rng)
        canvas.img.save(root / "documents" / f"{ucsf}_1.png")
        lines = [{"boundingBox": _ocr_box(_union([b for _, b in ln])),
                  "text": " ".join(w for w, _ in ln),
                  "words": [{"boundingBox": _ocr_box(b), "text": w} for w, b in ln]}
                 for ln in canvas.lines if ln]
        _write_json(root / "ocr_results" / f"{ucsf}_1.json", {
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
        _write_json(root / f"{split}_v1.0.json", {"dataset_name": "docvqa", "dataset_split": split,
                                                 "dataset_version": "1.0", "data": rows})
    logger.info("wrote DocVQA demo (%d pages) to %s", n_pages, root)
    return root


# ---------------------------------------------------------------------------------------- cache
_GENERATORS = {"funsd": make_funsd_demo, "cord": make_cord_demo,
               "rvl-cdip": make_rvl_cdip_demo, "docvqa": make_docvqa_demo}


def demo_cache_dir(task: str, cache_root: Path | None = None) -> Path:
    """Folder where :func:`ensure_demo` keeps ``task``.

    Args:
        task: canonical task name (``"funsd"``, ``"cord"``, ``"rvl-cdip"``, ``"docvqa"``).
        cache_root: cache root; defaults to ``$AETNET_CACHE``, else ``~/.cache/aetnet``.

    Returns:
        ``<cache_root>/demo/<task>-v1``.
    """
    if cache_root is None:
        env = os.environ.get("AETNET_CACHE")
        cache_root = Path(env) if env else Path.home() / ".cache" / "aetnet"
    return Path(cache_root).expanduser() / "demo" / f"{task}-{DEMO_VERSION}"


def ensure_demo(task: str, cache_root: Path | None = None) -> Path:
    """Generates the demo dataset of ``task`` once and returns its folder.

    The data is written to a temporary sibling folder and renamed into place, so a folder that
    exists is complete; concurrent callers (e.g. several ``torchrun`` ranks) all end up with the
    same folder. A second call returns the existing folder untouched.

    Args:
        task: ``"funsd"``, ``"cord"``, ``"rvl-cdip"`` (or ``"rvl_cdip"``) or ``"docvqa"``.
        cache_root: cache root; defaults to ``$AETNET_CACHE``, else ``~/.cache/aetnet``.

    Returns:
        The dataset folder, in the task's original release layout.

    Raises:
        AetnetError: for an unknown task.
    """
    key = task.replace("_", "-").lower()
    if key not in _GENERATORS:
        raise AetnetError(
            f"no demo dataset for task '{task}'; choose one of {', '.join(sorted(_GENERATORS))}"
        )
    final = demo_cache_dir(key, cache_root)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        _GENERATORS[key](tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("demo dataset for %s ready at %s", key, final)
    return final
