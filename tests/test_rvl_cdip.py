"""RVL-CDIP reader (real memo page with OCR, label files, HF schema) and classification metrics."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from PIL import Image

from aetnet.data.ocr.tesseract import OcrSettings
from aetnet.errors import DataError
from aetnet.metrics import classification_metrics, save_confusion
from aetnet.tasks.rvl_cdip import RVL_CDIP_CLASSES, parse_label_file, read_rvl_cdip


@pytest.fixture(scope="session")
def ocr_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rvl-ocr-cache")


@pytest.fixture(scope="session")
def memo(shared_data, ocr_cache):
    """The real sample read once per session (OCR is the slow part)."""
    return read_rvl_cdip(shared_data / "rvl_cdip", cache_dir=ocr_cache)


def test_class_order_matches_official_readme(shared_data):
    readme = (shared_data / "rvl_cdip" / "labels" / "readme.txt").read_text()
    listed = dict(re.findall(r"^(\d+) ([a-z ]+?)\s*$", readme, flags=re.M))
    assert [listed[str(i)] for i in range(16)] == list(RVL_CDIP_CLASSES)


def test_real_memo_page(shared_data, memo, ocr_cache):
    rvl = shared_data / "rvl_cdip"
    assert list(memo) == ["sample"]  # labels/sample.txt; readme.txt is not a label file
    (doc,) = memo["sample"]
    assert doc.id == "images/80035521.tif"
    assert doc.doc_label == "memo" and doc.meta["label_id"] == 15
    assert doc.image_path == rvl / "images" / "80035521.tif"
    width, height = Image.open(doc.image_path).size
    assert doc.page_size == (width, height)
    assert len(doc.words) >= 50
    text = " ".join(doc.words)
    for expected in ("MEMORANDUM", "Solubility", "Materials", "Respiratory"):
        assert expected in text
    for x0, y0, x1, y1 in doc.boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert doc.meta["ocr"] == {"lang": "eng", "psm": 3, "oem": None}

    # The same page through the labels folder and through the label file: same result (cached).
    again = read_rvl_cdip(rvl / "labels" / "sample.txt", cache_dir=ocr_cache)
    assert again["sample"][0].words == doc.words
    assert read_rvl_cdip(rvl / "labels", cache_dir=ocr_cache)["sample"][0].boxes == doc.boxes


def test_label_files_image_root_and_bad_line(tmp_path, ocr_cache):
    pages = tmp_path / "scans"
    (pages / "a").mkdir(parents=True)
    Image.new("L", (48, 32), 255).save(pages / "a" / "one.png")
    Image.new("L", (40, 30), 255).save(pages / "a" / "two page.tif")
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "train.txt").write_text("a/one.png 0\n\na/two page.tif 11\n")
    (labels / "test.txt").write_text("a/one.png 15\n")
    (labels / "notes.txt").write_text("ignored: official split files exist\n")

    splits = read_rvl_cdip(tmp_path, image_root=pages, cache_dir=ocr_cache, ocr=OcrSettings(psm=6))
    assert sorted(splits) == ["test", "train"]
    assert [d.doc_label for d in splits["train"]] == ["letter", "invoice"]
    assert splits["train"][1].page_size == (40, 30)
    assert splits["test"][0].doc_label == "memo"
    assert splits["train"][0].words == []  # a blank page has no words

    only = read_rvl_cdip(tmp_path, image_root=pages, cache_dir=ocr_cache, ocr=OcrSettings(psm=6),
                         splits=["test"])
    assert list(only) == ["test"]
    with pytest.raises(DataError, match="not found; available"):
        read_rvl_cdip(tmp_path, image_root=pages, cache_dir=ocr_cache, splits=["validation"])

    (labels / "train.txt").write_text("a/one.png 0\na/two page.tif 11\na/one.png memo\n")
    with pytest.raises(DataError) as err:
        read_rvl_cdip(tmp_path, image_root=pages, cache_dir=ocr_cache)
    assert str(labels / "train.txt") in str(err.value) and "line 3" in str(err.value)

    (labels / "train.txt").write_text("a/one.png 16\n")
    with pytest.raises(DataError, match="line 1 has class id 16"):
        parse_label_file(labels / "train.txt")

    (labels / "train.txt").write_text("a/missing.png 3\n")
    with pytest.raises(DataError, match="missing.png"):
        read_rvl_cdip(tmp_path, image_root=pages, cache_dir=ocr_cache)


def test_hugging_face_schema(shared_data, tmp_path, ocr_cache, memo):
    import datasets

    real = Image.open(shared_data / "rvl_cdip" / "images" / "80035521.tif")
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(RVL_CDIP_CLASSES)),
    })
    rows = [{"image": real, "label": 15}, {"image": Image.new("L", (50, 40), 255), "label": 2}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows, features=features)}).save_to_disk(
        str(tmp_path / "hf")
    )
    splits = read_rvl_cdip(tmp_path / "hf", cache_dir=ocr_cache)
    assert list(splits) == ["test"]
    page, blank = splits["test"]
    assert page.doc_label == "memo" and blank.doc_label == "email"
    assert page.page_size == real.size and blank.page_size == (50, 40)
    # The same pixels give the same words as the file read by path.
    assert page.words == memo["sample"][0].words
    assert page.load_image().size == real.size


def test_metrics_hand_counted(tmp_path):
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "b", "b", "b", "a"]
    m = classification_metrics(y_true, y_pred, labels=["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P 1/2, R 1/2 -> F1 0.5; b: P 2/3, R 1 -> F1 0.8; c: F1 0; d occurs nowhere -> not averaged.
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]

    csv_path, png_path = save_confusion(m["confusion_matrix"], m["labels"], tmp_path / "eval")
    with open(csv_path, newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["gold", "a", "b", "c", "d"]
    assert table[1] == ["a", "1", "1", "0", "0"] and table[3] == ["c", "1", "0", "0", "0"]
    with Image.open(png_path) as img:
        assert img.format == "PNG" and img.size[0] > 100
    with pytest.raises(ValueError):
        save_confusion([[1, 2]], ["a", "b"], tmp_path)


def test_listed_pages_keep_plain_strings_per_page(tmp_path):
    # a listed split keeps one entry per page for the whole run (320,000 for RVL-CDIP's training split): no
    # instance dictionary, no Path object, and one shared string for the label file's name
    from aetnet.tasks.rvl_cdip import list_rvl_cdip

    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (20, 30), 255).save(tmp_path / "images" / name)
    (tmp_path / "labels" / "train.txt").write_text("images/a.png 3\nimages/b.png 15\n")
    first, second = list_rvl_cdip(tmp_path)["train"]
    assert not hasattr(first, "__dict__")
    assert first.image_path == tmp_path / "images" / "a.png" and first.page() == first.image_path
    assert (first.doc_id, first.label, second.label) == ("images/a.png", 3, 15)
    assert first.source is second.source and first.source == str(tmp_path / "labels" / "train.txt")
    assert not any(isinstance(value, Path) for value in (first.doc_id, first.source, first.image_file))
