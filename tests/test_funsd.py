"""FUNSD reader on the real sample, the HF schema, labels and box handling."""

from __future__ import annotations

import json

import pytest

from aetnet.data.documents.boxes import document_boxes, looks_normalized, normalize_box
from aetnet.data.documents.document import Document
from aetnet.errors import AetnetError, DataError
from aetnet.tasks.funsd import (
    FUNSD_LABELS,
    find_funsd_root,
    load_funsd,
    parse_funsd_annotation,
    read_funsd_hf,
)


def _json_counts(folder):
    words = entities = empty_text_words = 0
    links = set()
    for path in sorted(folder.glob("*.json")):
        form = json.loads(path.read_text())["form"]
        entities += len(form)
        for ent in form:
            words += len(ent["words"])
            empty_text_words += sum(1 for w in ent["words"] if not w["text"].strip())
            links |= {(path.stem, tuple(p)) for p in ent["linking"]}
    return words, entities, empty_text_words, links


@pytest.mark.parametrize("split,folder", [("train", "training_data"), ("eval", "testing_data")])
def test_reader_counts_match_json(shared_data, split, folder):
    root = shared_data / "funsd"
    docs = load_funsd(str(root))[split]
    ann = root / "dataset" / folder / "annotations"
    words, entities, empty_words, links = _json_counts(ann)
    assert len(docs) == len(list(ann.glob("*.json")))
    assert sum(len(d.words) for d in docs) + sum(d.meta["skipped_words"] for d in docs) == words
    assert sum(len(d.words) for d in docs) == words - empty_words
    assert sum(d.meta["entities"] for d in docs) == entities
    assert {(d.id, tuple(link)) for d in docs for link in d.links} == links
    for doc in docs:
        assert len(doc.labels) == len(doc.words) == len(doc.boxes) == len(doc.segment_ids)
        assert set(doc.labels) <= set(FUNSD_LABELS)
        assert doc.image_path is not None and doc.page_size[0] > 0


def test_labels_are_bio_per_entity(shared_data):
    path = shared_data / "funsd/dataset/training_data/annotations/0000971160.json"
    doc = parse_funsd_annotation(path, shared_data / "funsd/dataset/training_data/images/0000971160.png")
    form = json.loads(path.read_text())["form"]
    expected = []
    for ent in form:
        kept = [w for w in ent["words"] if w["text"].strip()]
        for i, _ in enumerate(kept):
            expected.append("O" if ent["label"] == "other" else ("B-" if i == 0 else "I-") + ent["label"].upper())
    assert doc.labels == expected
    # Segment boxes: the union of each entity's non-empty word boxes (the reference), not its "box".
    for ent in form:
        kept = [w["box"] for w in ent["words"] if w["text"].strip()]
        if kept:
            xs0, ys0, xs1, ys1 = zip(*kept)
            assert doc.segment_boxes[ent["id"]] == [min(xs0), min(ys0), max(xs1), max(ys1)]
    assert any(doc.segment_boxes[e["id"]] != e["box"] for e in form if e["id"] in doc.segment_boxes)


def test_empty_entities_survive(tmp_path):
    ann = {"form": [
        {"id": 0, "box": [10, 10, 50, 20], "text": "Name:", "label": "question",
         "words": [{"box": [10, 10, 50, 20], "text": "Name:"}], "linking": [[0, 2]]},
        {"id": 1, "box": [0, 0, 0, 0], "text": "", "label": "answer", "words": [], "linking": []},
        {"id": 2, "box": [60, 10, 90, 20], "text": "", "label": "answer",
         "words": [{"box": [60, 10, 90, 20], "text": " "}], "linking": [[0, 2]]},
    ]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ann))
    from PIL import Image

    Image.new("L", (100, 40), 255).save(tmp_path / "a.png")
    doc = parse_funsd_annotation(path, tmp_path / "a.png")
    assert doc.words == ["Name:"] and doc.labels == ["B-QUESTION"]
    assert doc.meta == {"entities": 3, "empty_entities": 2, "skipped_words": 1}
    assert doc.links == [(0, 2)]


def test_root_detection(shared_data, tmp_path):
    root = shared_data / "funsd"
    assert find_funsd_root(root) == root / "dataset"
    assert find_funsd_root(root / "dataset") == root / "dataset"
    assert find_funsd_root(root / "dataset" / "training_data") == root / "dataset"
    with pytest.raises(AetnetError, match="not a FUNSD folder"):
        find_funsd_root(tmp_path)
    with pytest.raises(AetnetError, match="does not exist"):
        load_funsd(str(tmp_path / "nope"))


def test_unknown_label_and_bad_json(tmp_path):
    path = tmp_path / "b.json"
    path.write_text('{"form": [{"id": 0, "label": "signature", "words": []}]}')
    with pytest.raises(DataError, match="unknown label 'signature'.*b.json|b.json.*unknown label 'signature'"):
        parse_funsd_annotation(path, None)
    path.write_text('{"form": [')
    with pytest.raises(DataError, match="invalid JSON"):
        parse_funsd_annotation(path, None)


def test_hf_schema_roundtrip(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    features = datasets.Features({
        "id": datasets.Value("string"),
        "tokens": datasets.Sequence(datasets.Value("string")),
        "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=FUNSD_LABELS)),
        "image": datasets.Image(),
    })
    rows = {
        "id": ["0", "1"],
        "tokens": [["Date:", "1998"], ["TO:"]],
        # 5/201 and 323, 641/200 are values a plain b * size / 1000 round trip truncates to b - 1
        "bboxes": [[[5, 323, 200, 641], [300, 100, 400, 1000]], [[0, 0, 500, 500]]],
        "ner_tags": [[3, 5], [1]],
        "image": [Image.new("RGB", (201, 200), "white"), Image.new("RGB", (50, 80), "white")],
    }
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows, features=features),
        "test": datasets.Dataset.from_dict(rows, features=features),
    })
    dd.save_to_disk(str(tmp_path / "hf"))
    splits = load_funsd(str(tmp_path / "hf"))
    doc = splits["train"][0]
    assert doc.words == ["Date:", "1998"] and doc.labels == ["B-QUESTION", "B-ANSWER"]
    assert document_boxes(doc, "word") == [[5, 323, 200, 641], [300, 100, 400, 1000]]
    assert len(splits["eval"]) == 2
    with pytest.raises(AetnetError, match="lacks column"):
        read_funsd_hf(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"tokens": [["a"]]})}))


def test_normalize_box_cases():
    assert normalize_box([0, 0, 200, 100], (200, 100)) == [0, 0, 1000, 1000]
    assert normalize_box([50, 25, 150, 75], (200, 100)) == [250, 250, 750, 750]
    # A small overhang is fed as the reference computes it, int(1000 * x / w) = 1015 (LayoutLMv3's position
    # tables hold up to 1023); below 0 there is no table row: 0.
    assert normalize_box([-2, 0, 203, 100], (200, 100)) == [0, 0, 1015, 1000]
    assert normalize_box([100, 98, 204, 100.9], (200, 100)) == [500, 980, 1020, 1009]
    # A coordinate past 1023 (204.8 / 200 -> 1024) clips the whole box to the page.
    assert normalize_box([201, 98, 204.8, 100.9], (200, 100)) == [1000, 980, 1000, 1000]
    with pytest.raises(DataError, match="inverted"):
        normalize_box([10, 10, 5, 20], (200, 100), "doc.json")
    with pytest.raises(DataError, match="outside the 200x100 page"):
        normalize_box([0, 0, 400, 50], (200, 100), "doc.json")


def test_already_normalized_boxes_detected():
    doc = Document("d", ["a", "b"], [[100, 100, 900, 950], [10, 10, 20, 20]], (300, 400), source="x.json")
    assert looks_normalized(doc.boxes, doc.page_size)
    with pytest.raises(DataError, match="already normalised"):
        document_boxes(doc)


def test_segment_vs_word_boxes():
    doc = Document(
        "d", ["Name", ":", "free"], [[0, 0, 10, 10], [10, 0, 20, 10], [50, 50, 60, 60]], (100, 100),
        segment_ids=[7, 7, -1], segment_boxes={7: [0, 0, 20, 10]},
    )
    assert document_boxes(doc, "segment") == [[0, 0, 200, 100], [0, 0, 200, 100], [500, 500, 600, 600]]
    assert document_boxes(doc, "word") == [[0, 0, 100, 100], [100, 0, 200, 100], [500, 500, 600, 600]]


def test_document_validation():
    with pytest.raises(DataError, match="2 words but 1 boxes"):
        Document("d", ["a", "b"], [[0, 0, 1, 1]], (10, 10), source="f.json")
    with pytest.raises(DataError, match="page size"):
        Document("d", [], [], (0, 10))
    with pytest.raises(DataError, match="labels"):
        Document("d", ["a"], [[0, 0, 1, 1]], (10, 10), labels=["O", "O"])
