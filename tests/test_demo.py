"""Tests for the synthetic demo datasets written in each benchmark's original release format."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytesseract
import pytest
from PIL import Image, ImageOps

from aetnet.data import demo
from aetnet.errors import AetnetError

CORD_CATEGORIES = {"menu.cnt", "menu.nm", "menu.price", "sub_total.subtotal_price",
                   "sub_total.tax_price", "total.total_price", "total.cashprice", "total.changeprice"}
# written out by hand from the official RVL-CDIP readme (0 letter, 1 form, ... 11 invoice, 15 memo)
RVL_IDS = {"letter": 0, "form": 1, "invoice": 11, "memo": 15}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("demos")
    # smaller than the defaults to keep this file fast; the defaults are exercised by ensure_demo
    return {"funsd": demo.make_funsd_demo(base / "funsd", n_train=12, n_test=4),
            "cord": demo.make_cord_demo(base / "cord", n_train=12, n_test=4),
            "rvl-cdip": demo.make_rvl_cdip_demo(base / "rvl", n_per_class=4, n_eval_per_class=1),
            "docvqa": demo.make_docvqa_demo(base / "docvqa", n_pages=16)}


@pytest.mark.parametrize("make,kwargs", [
    (demo.make_funsd_demo, {"n_train": 3, "n_test": 1}),
    (demo.make_cord_demo, {"n_train": 3, "n_test": 1}),
    (demo.make_rvl_cdip_demo, {"n_per_class": 1, "n_eval_per_class": 1}),
    (demo.make_docvqa_demo, {"n_pages": 4}),
])
def test_generation_is_deterministic(tmp_path, make, kwargs):
    a = _tree(make(tmp_path / "a", seed=3, **kwargs))
    b = _tree(make(tmp_path / "b", seed=3, **kwargs))
    c = _tree(make(tmp_path / "c", seed=4, **kwargs))
    assert a and a == b
    assert len(a) == len(c) and a != c


def test_funsd_schema_and_boxes(demos):
    root = demos["funsd"] / "dataset"
    n_empty = 0
    for split, n in (("training_data", 12), ("testing_data", 4)):
        anns = sorted((root / split / "annotations").glob("*.json"))
        imgs = sorted((root / split / "images").glob("*.png"))
        assert len(anns) == n and [p.stem for p in anns] == [p.stem for p in imgs]
        for ann_path, img_path in zip(anns, imgs):
            img = Image.open(img_path)
            assert img.mode == "L" and img.size == (500, 650)
            ink = ImageOps.invert(img)
            form = json.loads(ann_path.read_text())["form"]
            ids = {e["id"] for e in form}
            assert len(ids) == len(form)
            labels = {e["label"] for e in form}
            assert labels <= {"question", "answer", "header", "other"} and {"question", "answer"} <= labels
            for e in form:
                assert set(e) == {"id", "box", "text", "label", "words", "linking"}
                assert e["text"] == " ".join(w["text"] for w in e["words"])
                if not e["words"]:
                    n_empty += 1
                    assert e["text"] == ""
                x0, y0, x1, y1 = e["box"]
                assert 0 <= x0 < x1 <= 500 and 0 <= y0 < y1 <= 650
                lo_x = lo_y = 10**9
                hi_x = hi_y = -1
                for w in e["words"]:
                    wx0, wy0, wx1, wy1 = w["box"]
                    assert x0 <= wx0 < wx1 <= x1 and y0 <= wy0 < wy1 <= y1, (ann_path, w)
                    assert ink.crop(w["box"]).getbbox() is not None, (ann_path, w)  # ink in it
                    lo_x, lo_y, hi_x, hi_y = min(lo_x, wx0), min(lo_y, wy0), max(hi_x, wx1), max(hi_y, wy1)
                if e["words"]:
                    assert [lo_x, lo_y, hi_x, hi_y] == e["box"]
                if e["label"] == "question":
                    assert e["text"].endswith(":")
                for a, b in e["linking"]:
                    assert a in ids and b in ids and e["id"] in (a, b)
                    other = next(o for o in form if o["id"] == (b if a == e["id"] else a))
                    assert [a, b] in other["linking"]  # FUNSD lists a link on both ends
            by_id = {e["id"]: e for e in form}
            for e in form:
                if e["label"] == "answer":  # every answer hangs off one question to its left
                    (q_id, a_id), = e["linking"]
                    q = by_id[q_id]
                    assert a_id == e["id"] and q["label"] == "question" and q["box"][2] < e["box"][0]
    assert n_empty >= 2  # page 0 of each split has one empty entity


def test_cord_schema_and_sums(demos):
    for split, n in (("train", 12), ("test", 4)):
        jsons = sorted((demos["cord"] / split / "json").glob("receipt_*.json"))
        assert [p.name for p in jsons] == [f"receipt_{i:05d}.json" for i in range(n)]
        for p in jsons:
            ann = json.loads(p.read_text())
            meta = ann["meta"]
            assert meta["split"] == split and meta["image_id"] == int(p.stem[-5:])
            w, h = meta["image_size"]["width"], meta["image_size"]["height"]
            img = Image.open(demos["cord"] / split / "image" / f"{p.stem}.png")
            assert img.size == (w, h)
            amounts, menu_total, groups = {}, 0, {}
            for line in ann["valid_line"]:
                assert line["category"] in CORD_CATEGORIES and line["words"]
                groups.setdefault(line["group_id"], set()).add(line["category"])
                for word in line["words"]:
                    q = word["quad"]
                    assert set(q) == {f"{a}{i}" for a in "xy" for i in range(1, 5)}
                    for k in range(1, 5):
                        assert 0 <= q[f"x{k}"] <= w and 0 <= q[f"y{k}"] <= h
                    assert q["x1"] < q["x2"] and q["y1"] < q["y4"]  # top-left, clockwise
                    assert word["is_key"] in (0, 1) and isinstance(word["row_id"], int)
                value = line["words"][-1]["text"]
                if line["category"] == "menu.price":
                    menu_total += int(value.replace(",", ""))
                elif not line["category"].startswith("menu."):
                    assert line["words"][0]["is_key"] == 1 and line["words"][-1]["is_key"] == 0
                    amounts[line["category"]] = int(value.replace(",", ""))
            assert all(g == {"menu.cnt", "menu.nm", "menu.price"} for g in groups.values()
                       if any(c.startswith("menu.") for c in g))
            assert amounts["sub_total.subtotal_price"] == menu_total
            tax = amounts.get("sub_total.tax_price", 0)
            assert amounts["total.total_price"] == menu_total + tax
            if "total.cashprice" in amounts:
                assert amounts["total.cashprice"] - amounts["total.changeprice"] == menu_total + tax
            assert ann["gt_parse"]["total"]["total_price"] == f"{menu_total + tax:,}"


def test_rvl_cdip_labels_and_images(demos):
    root = demos["rvl-cdip"]
    seen = {}
    for split, per_class in (("train", 4), ("val", 1), ("test", 1)):
        lines = (root / "labels" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == 4 * per_class
        counts: dict[int, int] = {}
        for line in lines:
            m = re.fullmatch(r"(\S+\.tif) (\d+)", line)
            assert m, line
            img = Image.open(root / m.group(1))
            assert img.format == "TIFF" and img.mode == "L" and max(img.size) <= 1000
            cid = int(m.group(2))
            counts[cid] = counts.get(cid, 0) + 1
            seen.setdefault(cid, root / m.group(1))
        assert counts == {cid: per_class for cid in RVL_IDS.values()}
    # the class id must name what is drawn: OCR the title strip of one page per class
    for name, cid in RVL_IDS.items():
        top = pytesseract.image_to_string(Image.open(seen[cid]).crop((0, 0, 600, 120))).upper()
        assert ("MEMORANDUM" in top) == (name == "memo"), top
        assert ("INVOICE" in top) == (name == "invoice"), top
        assert ("FORM" in top) == (name == "form"), top


def test_tesseract_reads_an_rvl_page():
    img, words = demo.render_rvl_cdip_page("letter", random.Random(11))
    ocr = pytesseract.image_to_string(img).split()
    found = 0
    for word in words:
        if word in ocr:
            ocr.remove(word)
            found += 1
    assert len(words) > 30 and found / len(words) >= 0.7, (found, len(words))


def test_docvqa_answers_appear_in_ocr(demos):
    root = demos["docvqa"]
    qids, docs = set(), {}
    for split in ("train", "val"):
        ds = json.loads((root / f"{split}_v1.0.json").read_text())
        assert (ds["dataset_name"], ds["dataset_split"], ds["dataset_version"]) == ("docvqa", split, "1.0")
        assert ds["data"]
        for q in ds["data"]:
            assert q["questionId"] not in qids and q["data_split"] == split
            qids.add(q["questionId"])
            assert docs.setdefault(q["docId"], split) == split  # no page in two splits
            assert q["image"] == f"documents/{q['ucsf_document_id']}_{q['ucsf_document_page_no']}.png"
            img = Image.open(root / q["image"])
            ocr = json.loads((root / "ocr_results" / f"{Path(q['image']).stem}.json").read_text())
            assert ocr["status"] == "Succeeded"
            page = ocr["recognitionResults"][0]
            assert (page["width"], page["height"], page["unit"]) == (*img.size, "pixel")
            words = []
            for line in page["lines"]:
                assert line["text"] == " ".join(w["text"] for w in line["words"])
                lx = line["boundingBox"][0::2]
                ly = line["boundingBox"][1::2]
                for w in line["words"]:
                    bb = w["boundingBox"]
                    assert len(bb) == 8
                    assert min(lx) <= min(bb[0::2]) and max(bb[0::2]) <= max(lx) <= page["width"]
                    assert min(ly) <= min(bb[1::2]) and max(bb[1::2]) <= max(ly) <= page["height"]
                    words.append(w["text"])
            assert q["question"].endswith("?") and q["answers"]
            for answer in q["answers"]:
                target = answer.split()
                assert any(words[i:i + len(target)] == target for i in range(len(words))), answer
    assert len(docs) == 16


def test_corpus_covers_every_generated_word(demos):
    text = demo.corpus_path().read_text()
    assert len(text.splitlines()) >= 300
    vocab = set(re.findall(r"[A-Za-z]+", text))
    emitted: set[str] = set()
    for p in (demos["funsd"] / "dataset").rglob("*.json"):
        emitted.update(e["text"] for e in json.loads(p.read_text())["form"])
    for p in demos["cord"].rglob("receipt_*.json"):
        emitted.update(w["text"] for ln in json.loads(p.read_text())["valid_line"] for w in ln["words"])
    for p in (demos["docvqa"] / "ocr_results").glob("*.json"):
        emitted.update(ln["text"] for ln in json.loads(p.read_text())["recognitionResults"][0]["lines"])
    for p in demos["docvqa"].glob("*_v1.0.json"):
        emitted.update(q["question"] for q in json.loads(p.read_text())["data"])
    for seed in range(6):
        for name in RVL_IDS:
            emitted.update(demo.render_rvl_cdip_page(name, random.Random(seed))[1])
    missing = {t for s in emitted for t in re.findall(r"[A-Za-z]+", s)} - vocab
    assert not missing


def test_ensure_demo_caches_and_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "env"))
    path = demo.ensure_demo("funsd")
    assert path == tmp_path / "env" / "demo" / "funsd-v1"
    ann = next((path / "dataset" / "training_data" / "annotations").glob("*.json"))
    (path / "sentinel").write_text("kept")
    stamp = (path.stat().st_mtime_ns, ann.stat().st_mtime_ns)
    assert demo.ensure_demo("funsd") == path
    assert (path / "sentinel").read_text() == "kept"  # reused, not regenerated
    assert (path.stat().st_mtime_ns, ann.stat().st_mtime_ns) == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == ["funsd-v1"]  # no temp folder left over
    explicit = demo.ensure_demo("rvl_cdip", cache_root=tmp_path / "arg")
    assert explicit == tmp_path / "arg" / "demo" / "rvl-cdip-v1"
    assert len((explicit / "labels" / "train.txt").read_text().splitlines()) == 4 * 8  # defaults


def test_ensure_demo_default_location_and_unknown_task(tmp_path, monkeypatch):
    monkeypatch.delenv("AETNET_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo.demo_cache_dir("cord") == tmp_path / ".cache" / "aetnet" / "demo" / "cord-v1"
    with pytest.raises(AetnetError, match="funsd"):
        demo.ensure_demo("sroie")
