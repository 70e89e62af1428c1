"""CORD reader: the real sample's JSON, the original split layout, the Hugging Face schema."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from PIL import Image

from aetnet.errors import AetnetError, DataError
from aetnet.tasks.cord import CORD_CATEGORIES, cord_label_list, read_cord


def _expected(gt: dict) -> tuple[list[str], list[str], list[int], list[int]]:
    """Words, BIO labels, line indices and group ids written out with explicit loops, independently
    of the reader."""
    words, labels, lines, groups = [], [], [], []
    for index, line in enumerate(gt["valid_line"]):
        n_kept = 0
        for word in line["words"]:
            if word["text"].strip() == "":
                continue
            words.append(word["text"])  # as annotated: the reference tokenises it unstripped
            labels.append(("B-" if n_kept == 0 else "I-") + line["category"])
            lines.append(index)
            groups.append(line["group_id"])
            n_kept += 1
    return words, labels, lines, groups


def test_label_list():
    assert len(CORD_CATEGORIES) == 30 == len(set(CORD_CATEGORIES))
    assert list(CORD_CATEGORIES) == sorted(CORD_CATEGORIES)
    labels = cord_label_list()
    assert len(labels) == 61 and labels[0] == "O"
    assert labels[1:3] == ["B-menu.cnt", "I-menu.cnt"]
    assert labels[-1] == "I-void_menu.price"


def test_real_sample_words_labels_boxes(shared_data, caplog):
    cord = shared_data / "cord"
    with caplog.at_level(logging.WARNING, logger="aetnet.tasks.cord"):
        splits = read_cord(cord)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "20 of 20" in warnings[0].getMessage() and "blank pages" in warnings[0].getMessage()

    docs = splits["train"] + splits["test"]
    assert len(docs) == 20
    seen_categories = set()
    for doc in docs:
        gt = json.loads((cord / "json" / f"{doc.id}.json").read_text())
        words, labels, lines, groups = _expected(gt)
        assert doc.words == words
        assert doc.labels == labels
        assert doc.segment_ids == lines  # one segment per valid_line, as the reference
        assert doc.meta["group_ids"] == groups
        assert doc.page_size == (gt["meta"]["image_size"]["width"], gt["meta"]["image_size"]["height"])
        assert doc.image_path is None and doc.image is None
        n_empty = sum(1 for line in gt["valid_line"] for w in line["words"] if not w["text"].strip())
        assert doc.meta["skipped_words"] == n_empty
        seen_categories |= {line["category"] for line in gt["valid_line"]}
        assert doc.load_image().size == doc.page_size  # blank page of the annotated size
    assert seen_categories <= set(CORD_CATEGORIES)

    # One quad, checked by hand: top-left (x1, y1) and bottom-right (x3, y3) corners.
    doc = next(d for d in docs if d.id == "receipt_00000")
    gt = json.loads((cord / "json" / "receipt_00000.json").read_text())
    quad = gt["valid_line"][0]["words"][0]["quad"]
    assert doc.boxes[0] == [quad["x1"], quad["y1"], quad["x3"], quad["y3"]]
    # A segment box is the union of its words' boxes.
    seg = doc.segment_ids[0]
    member = [b for b, s in zip(doc.boxes, doc.segment_ids) if s == seg]
    assert doc.segment_boxes[seg] == [
        min(b[0] for b in member),
        min(b[1] for b in member),
        max(b[2] for b in member),
        max(b[3] for b in member),
    ]


def test_carve_out_is_deterministic(shared_data):
    cord = shared_data / "cord"
    a = read_cord(cord, eval_fraction=0.2, seed=42)
    b = read_cord(cord / "json", eval_fraction=0.2, seed=42)  # the json/ folder itself
    ids = lambda s: [d.id for d in s]  # noqa: E731
    assert ids(a["test"]) == ids(b["test"]) and ids(a["train"]) == ids(b["train"])
    assert len(a["test"]) == 4 and len(a["train"]) == 16
    assert not set(ids(a["test"])) & set(ids(a["train"]))
    assert ids(a["train"]) == sorted(ids(a["train"]))
    c = read_cord(cord, eval_fraction=0.2, seed=7)
    assert ids(c["test"]) != ids(a["test"])
    with pytest.raises(AetnetError, match="eval_fraction"):
        read_cord(cord, eval_fraction=1.0)


def test_original_layout_with_images_and_errors(shared_data, tmp_path, caplog):
    cord = shared_data / "cord"
    src = sorted((cord / "json").glob("*.json"))
    for split, files in (("train", src[:2]), ("dev", src[2:3]), ("test", src[3:4])):
        (tmp_path / split / "json").mkdir(parents=True)
        (tmp_path / split / "image").mkdir()
        for f in files:
            shutil.copy(f, tmp_path / split / "json" / f.name)
    # Only one receipt gets an image; its size differs from meta.image_size, which wins.
    Image.new("RGB", (40, 60), "white").save(tmp_path / "train" / "image" / f"{src[0].stem}.png")
    with caplog.at_level(logging.WARNING, logger="aetnet.tasks.cord"):
        splits = read_cord(tmp_path)
    assert sorted(splits) == ["dev", "test", "train"]
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [2, 1, 1]
    first = splits["train"][0]
    assert first.image_path == tmp_path / "train" / "image" / f"{src[0].stem}.png"
    assert splits["train"][1].image_path is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "3 of 4" in warning.getMessage()

    # Unknown category: the file, the field and the choices are named.
    bad = json.loads(src[0].read_text())
    bad["valid_line"][1]["category"] = "menu.flavour"
    (tmp_path / "train" / "json" / src[0].name).write_text(json.dumps(bad))
    with pytest.raises(DataError) as err:
        read_cord(tmp_path)
    message = str(err.value)
    assert src[0].name in message and "valid_line[1].category" in message
    assert "menu.flavour" in message and "total.total_price" in message


def _hf_row(n_words: int, size: tuple[int, int]) -> dict:
    lines = []
    for k in range(n_words):
        x = 5 + 10 * k
        lines.append({
            "words": [
                {"quad": {"x1": x, "y1": 4, "x2": x + 8, "y2": 5,
                          "x3": x + 9, "y3": 12, "x4": x - 1, "y4": 11},
                 "text": f"w{k}"},
                {"quad": {"x1": x, "y1": 14, "x2": x + 8, "y2": 14, "x3": x + 8, "y3": 20, "x4": x, "y4": 20},
                 "text": ""},
            ],
            "category": "menu.nm" if k % 2 == 0 else "menu.price",
            "group_id": k // 2,
        })
    gt = {"gt_parse": {}, "meta": {"version": "2.0.0", "split": "train", "image_id": n_words},
          "valid_line": lines}
    return {"image": Image.new("RGB", size, (200, 200, 200)), "ground_truth": json.dumps(gt)}


def test_hugging_face_save_to_disk(tmp_path):
    import datasets
    features = datasets.Features({"image": datasets.Image(), "ground_truth": datasets.Value("string")})

    def make(rows):
        return datasets.Dataset.from_list(rows, features=features)

    dd = datasets.DatasetDict({
        "train": make([_hf_row(3, (48, 32)), _hf_row(2, (40, 24))]),
        "validation": make([_hf_row(1, (32, 32))]),
        "test": make([_hf_row(2, (36, 30))]),
    })
    dd.save_to_disk(str(tmp_path / "cord-v2"))
    splits = read_cord(tmp_path / "cord-v2")
    assert sorted(splits) == ["test", "train", "validation"]
    doc = splits["train"][0]
    assert doc.words == ["w0", "w1", "w2"]
    assert doc.labels == ["B-menu.nm", "B-menu.price", "B-menu.nm"]
    assert doc.boxes[0] == [5.0, 4.0, 14.0, 12.0]  # (x1, y1), (x3, y3) of the tilted quad
    assert doc.segment_ids == [0, 1, 2]  # one segment per line
    assert doc.meta["group_ids"] == [0, 0, 1]
    assert doc.segment_boxes[0] == [5.0, 4.0, 14.0, 12.0]
    assert doc.meta["skipped_words"] == 3
    assert doc.page_size == (48, 32)  # no meta.image_size: the image's size
    assert doc.load_image().size == (48, 32)
    assert splits["train"][1].page_size == (40, 24)
    assert len(splits["validation"]) == 1 and splits["test"][0].page_size == (36, 30)


def test_offline_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AetnetError, match="offline.*local folder"):
        read_cord("naver-clova-ix/cord-v2-does-not-exist-here")


def test_quad_rule_clips_and_swaps_like_the_reference():
    from aetnet.tasks.cord import cord_document

    def word(text, **q):
        return {"text": text, "quad": {"x2": 0, "y2": 0, "x4": 0, "y4": 0, **q}}

    gt = {"meta": {"image_size": {"width": 100, "height": 50}}, "valid_line": [
        {"category": "menu.nm", "group_id": 3, "words": [
            word("a", x1=-4, y1=-2, x3=10, y3=8),     # clipped at 0
            word("b", x1=30, y1=20, x3=12, y3=9),     # inverted on both axes: swapped
            word(" ", x1=90, y1=40, x3=99, y3=49)]},  # empty text: dropped, not in the line box
        {"category": "menu.price", "group_id": 3, "words": [word("9", x1=50, y1=1, x3=60, y3=9)]},
    ]}
    doc = cord_document(gt, "r", "r.json")
    assert doc.boxes == [[0, 0, 10, 8], [12, 9, 30, 20], [50, 1, 60, 9]]
    assert doc.segment_ids == [0, 0, 1]
    assert doc.segment_boxes == {0: [0, 0, 30, 20], 1: [50, 1, 60, 9]}
    assert doc.meta["skipped_words"] == 1
