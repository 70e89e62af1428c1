"""aetnet's first window of every real FUNSD and CORD sample equals LayoutLMv3's reference
preprocessing followed by the LayoutLMv3 tokenizer (truncation=True, max_length=512, labels on
first subwords): identical token ids, boxes and labels.

The reference is re-implemented here from its description (LayoutLMv3's FUNSD and CORD dataset
scripts), without calling aetnet's readers or box code:

* words whose text is empty after stripping are dropped;
* a word box is normalised by truncation, ``int(1000 * x / size)`` with the image's (FUNSD) or the
  annotated (CORD) page size; a CORD quad gives ``(max(0, x1), max(0, y1), x3, y3)``, each axis
  swapped when inverted;
* every word of an entity (FUNSD) or of a ``valid_line`` (CORD) gets the union of that entity's or
  line's normalised word boxes (segment-level layout);
* labels are ``B-``/``I-`` over the entity's label (``other`` -> ``O``) or the line's category.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.processor import load_processor
from aetnet.data.encoding.windows import IGNORE_INDEX
from aetnet.tasks.cord import CordTask
from aetnet.tasks.funsd import FunsdTask


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


def _norm(box, width, height):
    return [int(1000 * box[0] / width), int(1000 * box[1] / height),
            int(1000 * box[2] / width), int(1000 * box[3] / height)]


def _entity_rows(entities, width, height):
    """(text, normalised box, label) of each kept word, entities given as (label, words, boxes)."""
    rows = []
    for label, texts, boxes in entities:
        kept = [(t, _norm(b, width, height)) for t, b in zip(texts, boxes) if t.strip() != ""]
        if not kept:
            continue
        union = [min(b[0] for _, b in kept), min(b[1] for _, b in kept),
                 max(b[2] for _, b in kept), max(b[3] for _, b in kept)]
        for i, (text, _) in enumerate(kept):
            tag = "O" if label == "other" else ("B-" if i == 0 else "I-") + label.upper()
            rows.append((text, union, tag))
    return rows


def reference_funsd(annotation, image):
    with Image.open(image) as im:
        width, height = im.size
    form = json.loads(annotation.read_text(encoding="utf-8"))["form"]
    return _entity_rows([(e["label"], [w["text"] for w in e["words"]], [w["box"] for w in e["words"]])
                         for e in form], width, height)


def _quad_box(q):
    x0, y0, x1, y1 = max(0, q["x1"]), max(0, q["y1"]), q["x3"], q["y3"]
    if y1 < y0:
        y0, y1 = y1, y0
    if x1 < x0:
        x0, x1 = x1, x0
    return [x0, y0, x1, y1]


def reference_cord(annotation):
    gt = json.loads(annotation.read_text(encoding="utf-8"))
    size = gt["meta"]["image_size"]
    lines = [(line["category"], [w["text"] for w in line["words"]], [_quad_box(w["quad"]) for w in line["words"]])
             for line in gt["valid_line"]]
    return _entity_rows(lines, size["width"], size["height"])


def reference_first_window(rows, tokenizer):
    """The tokenizer with truncation=True, max_length=512; the label on each word's first subword."""
    words, boxes, tags = zip(*rows)
    enc = tokenizer(list(words), boxes=list(boxes), truncation=True, max_length=512)
    labels, previous = [], None
    for word in enc.word_ids():
        labels.append(tags[word] if word is not None and word != previous else None)
        previous = word
    return enc["input_ids"], [list(b) for b in enc["bbox"]], labels


def _aetnet_first_windows(task, data, tokenizer):
    cfg = resolve_config({}, {"task": task.name, "data": {"path": str(data)}})
    splits = task.load(cfg)
    labels = task.label_list()
    label2id = {name: i for i, name in enumerate(labels)}
    out = {}
    for docs in splits.values():
        docs = list(docs)  # the training split streams (a DocumentStream): read it whole here, 12-20 forms
        for window in task.encode(docs, tokenizer, label2id, cfg):
            doc = docs[window.doc_index]
            if doc.id not in out:
                out[doc.id] = (window.input_ids, window.bbox,
                               [None if x == IGNORE_INDEX else labels[x].upper() for x in window.labels])
    return out


def test_funsd_first_windows_equal_the_reference(shared_data, tokenizer):
    root = shared_data / "funsd" / "dataset"
    mine = _aetnet_first_windows(FunsdTask(), root, tokenizer)
    annotations = sorted(root.glob("*/annotations/*.json"))
    assert len(annotations) == len(mine) == 18
    tokens = 0
    for annotation in annotations:
        image = annotation.parent.parent / "images" / (annotation.stem + ".png")
        ids, boxes, labels = reference_first_window(reference_funsd(annotation, image), tokenizer)
        got_ids, got_boxes, got_labels = mine[annotation.stem]
        assert got_ids == ids, annotation.name
        assert got_boxes == boxes, annotation.name
        assert got_labels == labels, annotation.name
        tokens += len(ids)
    assert tokens > 18 * 300  # the comparison covers real, long windows


def test_cord_first_windows_equal_the_reference(shared_data, tokenizer):
    root = shared_data / "cord"
    mine = _aetnet_first_windows(CordTask(), root, tokenizer)
    annotations = sorted((root / "json").glob("*.json"))
    assert len(annotations) == len(mine) == 20
    for annotation in annotations:
        ids, boxes, labels = reference_first_window(reference_cord(annotation), tokenizer)
        got_ids, got_boxes, got_labels = mine[annotation.stem]
        assert (got_ids, got_boxes, got_labels) == (ids, boxes, labels), annotation.name


def test_unstripped_words_tokenise_as_the_reference(tmp_path, tokenizer):
    """Words with surrounding whitespace (none in the samples) are kept as annotated, like the reference."""
    form = {"form": [
        {"id": 0, "label": "question", "box": [10, 10, 90, 30], "linking": [[0, 1]],
         "words": [{"text": "Date: ", "box": [10, 10, 50, 30]}, {"text": " ", "box": [52, 10, 55, 30]},
                   {"text": "of\tbirth  ", "box": [56, 10, 90, 30]}]},
        {"id": 1, "label": "answer", "box": [100, 10, 160, 30], "linking": [[0, 1]],
         "words": [{"text": " 12/10/98", "box": [100, 10, 160, 31]}]},
        {"id": 2, "label": "other", "box": [0, 0, 0, 0], "linking": [], "words": [{"text": "", "box": [0, 0, 1, 1]}]},
    ]}
    folder = tmp_path / "testing_data"
    (folder / "annotations").mkdir(parents=True)
    (folder / "images").mkdir()
    (folder / "annotations" / "f.json").write_text(json.dumps(form))
    Image.new("RGB", (203, 97), "white").save(folder / "images" / "f.png")
    (folder.parent / "training_data" / "annotations").mkdir(parents=True)  # an empty train split
    mine = _aetnet_first_windows(FunsdTask(), tmp_path, tokenizer)
    ids, boxes, labels = reference_first_window(
        reference_funsd(folder / "annotations" / "f.json", folder / "images" / "f.png"), tokenizer)
    assert tokenizer.convert_ids_to_tokens(ids).count("\u0120") >= 2  # the trailing spaces' own subwords
    assert mine["f"] == (ids, boxes, labels)


def _fed(box):
    """What LayoutLMv3 can embed of a reference box: its values as computed while they fit the 1024-row
    position tables (0-1023); a box with a value past them is clipped to the page (0-1000)."""
    return [min(v, 1000) for v in box] if max(box) > 1023 else box


def test_cord_boxes_past_the_page_edge_are_fed_as_the_reference_computes_them(shared_data, tmp_path, tokenizer):
    """A real CORD receipt (864x1296) whose quads are pushed past the page edge, as receipt_00508's
    y3 = 867 on an 864-pixel page: the reference's int(1000 * y / h) above 1000 is what aetnet feeds."""
    (tmp_path / "json").mkdir()
    gt = json.loads((shared_data / "cord" / "json" / "receipt_00000.json").read_text(encoding="utf-8"))
    width, height = gt["meta"]["image_size"]["width"], gt["meta"]["image_size"]["height"]
    lines = gt["valid_line"]
    lines[0]["words"][0]["quad"].update(y3=height + 4, y4=height + 4)      # 1300 / 1296 -> 1003
    lines[1]["words"][0]["quad"].update(x3=width + 19, x2=width + 19)      # 883 / 864 -> 1021
    lines[2]["words"][0]["quad"].update(x3=width + 30, x2=width + 30)      # 894 / 864 -> 1034: past the table
    (tmp_path / "json" / "receipt_00000.json").write_text(json.dumps(gt), encoding="utf-8")
    mine = _aetnet_first_windows(CordTask(), tmp_path, tokenizer)
    rows = [(text, _fed(box), tag) for text, box, tag in reference_cord(tmp_path / "json" / "receipt_00000.json")]
    ids, boxes, labels = reference_first_window(rows, tokenizer)
    assert mine["receipt_00000"] == (ids, boxes, labels)
    # the pushed lines' boxes, by hand: int(1000 * 1300 / 1296) = 1003, int(1000 * 883 / 864) = 1021, and the
    # third line's 1034 clips its box to the page
    expected = [[296, 288, 312, 1003], [298, 310, 1021, 322], [298, 330, 1000, 342]]
    got_boxes = mine["receipt_00000"][1]
    assert all(box in got_boxes for box in expected)
    assert max(v for b in got_boxes for v in b) == 1021
