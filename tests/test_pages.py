"""The aetnet page format and the generic tasks (token, classify, qa) on the user's own documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from aetnet.cli.main import main
from aetnet.data.documents.page_targets import entity_segments, plain_to_bio, region_of
from aetnet.data.documents.pages import parse_page, read_pages
from aetnet.errors import AetnetError, DataError
from tests.helpers import page_record


@pytest.fixture()
def page_image(tmp_path) -> Path:
    path = tmp_path / "img" / "p.png"
    path.parent.mkdir()
    Image.new("RGB", (200, 100), "white").save(path)
    return path


def _page(**fields):
    return page_record("img/p.png", **fields)


def _parse(tmp_path, record, kind="token"):
    return parse_page(record, "pages.jsonl:7", tmp_path, kind)


# ----------------------------------------------------------------------------- hand-worked conversions
def test_plain_names_become_bio_over_runs_of_one_segment():
    labels = ["KEY", "VALUE", "VALUE", "O", "VALUE", "VALUE"]
    assert plain_to_bio(labels, None) == ["B-KEY", "B-VALUE", "I-VALUE", "O", "B-VALUE", "I-VALUE"]
    # a segment change splits a run of one name into two entities
    assert plain_to_bio(labels, [0, 1, 2, 3, 4, 4]) == ["B-KEY", "B-VALUE", "B-VALUE", "O", "B-VALUE", "I-VALUE"]
    assert entity_segments(["B-A", "I-A", "O", "B-A", "B-B", "I-B"]) == [0, 0, 1, 2, 3, 3]


def test_region_of_takes_the_region_covering_most_of_the_word():
    regions = [[0, 0, 10, 10], [5, 0, 30, 10]]
    assert region_of([6, 0, 16, 10], regions) == 1      # 40 % in region 0, 100 % in region 1
    assert region_of([8, 0, 12, 10], regions) == 1      # 50 % / 100 %
    assert region_of([40, 0, 50, 10], regions) == -1    # outside both
    assert region_of([28, 0, 38, 10], regions) == -1    # 20 % covered: under half


def test_page_with_plain_labels_segments_and_links(tmp_path, page_image):
    doc = _parse(tmp_path, _page(segments=[0, 1, 1], links=[[0, 1]]))
    assert doc.labels == ["B-KEY", "B-VALUE", "I-VALUE"]
    assert doc.segment_ids == [0, 1, 1]
    assert doc.segment_boxes == {0: [10, 10, 50, 20], 1: [60, 10, 120, 20]}
    assert doc.page_size == (200, 100) and doc.links == [(0, 1)]


def test_page_with_entities(tmp_path, page_image):
    doc = _parse(tmp_path, _page(labels=None, entities=[{"label": "VALUE", "words": [2, 1]},
                                                        {"label": "KEY", "words": [0]}]))
    assert doc.labels == ["B-KEY", "B-VALUE", "I-VALUE"]
    assert doc.segment_ids == [1, 0, 0]


def test_ocr_page_labels_the_words_its_regions_cover(tmp_path, page_image):
    def fake_ocr(path):  # a stand-in for Tesseract: the test is about the region matching
        assert Path(path) == page_image
        return ["Total:", "12.00", "EUR", "x"], [[10, 10, 50, 20], [60, 10, 90, 20], [95, 10, 120, 20],
                                                 [150, 50, 160, 60]]

    record = _page(words=None, boxes=None, labels=None,
                   entities=[{"label": "KEY", "box": [5, 5, 52, 25]}, {"label": "VALUE", "box": [58, 5, 125, 25]}])
    doc = parse_page(record, "p.jsonl:1", tmp_path, "token", ocr=fake_ocr)
    assert doc.words == ["Total:", "12.00", "EUR", "x"]
    assert doc.labels == ["B-KEY", "B-VALUE", "I-VALUE", "O"]
    assert doc.meta["words_from"] == "ocr"


# ----------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(("change", "field", "fix"), [
    ({"boxes": [[10, 10, 50, 20], [60, 10, 90, 20]]}, "boxes", "one box per word"),
    ({"labels": ["KEY", "VALUE"]}, "labels", "one label per word"),
    ({"boxes": [[10, 10, 50, 20], [60, 10, 90, 20], [95, 10, 250, 20]]}, "boxes[2]", "outside the 200x100 page"),
    ({"boxes": [[10, 10, 50, 20], [60, 10, 40, 20], [95, 10, 120, 20]]}, "boxes[1]", "inverted"),
    ({"boxes": [[10, 10, 50, 20], [60, "x", 90, 20], [95, 10, 120, 20]]}, "boxes[1][1]", "four pixel numbers"),
    ({"boxes": [[10, 10, 50, 20], [60, 10, 90], [95, 10, 120, 20]]}, "boxes[1]", "four pixel numbers"),
    ({"words": ["Total:", 12, "EUR"]}, "words[1]", "list of strings"),
    ({"image": "img/missing.png"}, "image", "does not exist"),
    ({"id": None}, "id", "is missing"),
    ({"id": [1]}, "id", "unique id"),
    ({"width": 200, "height": "tall"}, "height", "pixel size"),
    ({"labels": ["KEY", 3, "VALUE"]}, "labels[1]", "one label name per word"),
    ({"segments": [0, "a", 1]}, "segments[1]", "expected an integer"),
    ({"words": "Total 12.00"}, "words", "expected a list"),
    ({"segments": [0, 1]}, "segments", "one per word"),
    ({"labels": None, "entities": [{"label": "K", "words": [0, 5]}]}, "entities[0].words", "out of range"),
    ({"labels": None, "entities": [{"label": "K", "words": [0]}, {"label": "V", "words": [0]}]},
     "entities[1].words", "already belongs"),
    ({"links": [[0]]}, "links[0]", "id pairs"),
    ({"links": [[0, "x"]]}, "links[0][1]", "expected an integer"),
    ({"colour": "red"}, "colour", "not a page field"),
    ({"labels": None}, "labels", "needs labels"),
])
def test_each_bad_field_is_named_with_its_line_and_fix(tmp_path, page_image, change, field, fix):
    record = _page()
    record.update(change)
    record = {k: v for k, v in record.items() if v is not None}
    with pytest.raises(DataError) as err:
        _parse(tmp_path, record)
    message = str(err.value)
    assert message.startswith("pages.jsonl:7")
    assert f"field '{field}'" in message
    assert fix in message


def test_unknown_label_in_evaluation_split_names_the_page(tmp_path, page_image, tiny_base):
    train = [_page(id=f"t{i}") for i in range(3)]
    test = [_page(id="e1", labels=["KEY", "TOTAL", "TOTAL"])]
    for name, pages in (("train", train), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    import aetnet.tasks  # noqa: F401
    from aetnet.config.settings import resolve_config
    from aetnet.registry import TASKS

    task = TASKS.get("token")()
    cfg = resolve_config({"task": "token", "data": {"path": str(tmp_path)}})
    with pytest.raises(AetnetError, match=r"test.jsonl:1: unknown label 'B-TOTAL'"):
        task.load(cfg)


def test_unknown_label_is_skipped_and_listed_in_skip_mode(tmp_path, page_image):
    train = [_page(id=f"t{i}") for i in range(3)]
    test = [_page(id="e0"), _page(id="e1", labels=["KEY", "TOTAL", "TOTAL"]), _page(id="e2")]
    for name, pages in (("train", train), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    import aetnet.tasks  # noqa: F401
    from aetnet.config.settings import resolve_config
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.registry import TASKS

    task = TASKS.get("token")()
    bad_documents = BadDocuments("skip")
    splits = task.load(resolve_config({"task": "token", "data": {"path": str(tmp_path)}}), bad_documents=bad_documents)
    assert [d.id for d in splits["train"]] == ["t0", "t1", "t2"]
    assert [d.id for d in splits["eval"]] == ["e0", "e2"]
    [record] = bad_documents.records
    assert record["id"] == "e1" and record["split"] == "eval"
    assert record["reason"].endswith("test.jsonl:2: unknown label 'B-TOTAL'; valid labels are O, B-KEY, I-KEY, "
                                     "B-VALUE, I-VALUE; correct the label, or pass --on-bad-document skip to leave "
                                     "the document out")
    assert bad_documents.summary({"train": 3, "eval": 2})["documents_given"] == 6


def test_skip_mode_lists_bad_lines_and_keeps_the_others(tmp_path, page_image):
    from aetnet.data.documents.screen import BadDocuments

    lines = [json.dumps(_page(id="a")), "{not json", json.dumps(_page(id="b", labels=["KEY"])),
             json.dumps(_page(id="c"))]
    (tmp_path / "pages.jsonl").write_text("\n".join(lines) + "\n")
    policy = BadDocuments("skip")
    docs = read_pages(tmp_path / "pages.jsonl", "token", policy)["all"]
    assert [d.id for d in docs] == ["a", "c"]
    assert [r["source"] for r in policy.records] == [f"{tmp_path / 'pages.jsonl'}:2", f"{tmp_path / 'pages.jsonl'}:3"]


def test_duplicate_page_ids_are_an_error(tmp_path, page_image):
    (tmp_path / "pages.jsonl").write_text(json.dumps(_page()) + "\n" + json.dumps(_page()) + "\n")
    with pytest.raises(DataError, match="used twice"):
        read_pages(tmp_path / "pages.jsonl", "token")


def test_formats_show_pages_prints_the_schema(capsys):
    assert main(["formats", "show", "pages"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"id", "image", "words", "boxes", "segments", "labels", "entities", "class", "qa", "links"} \
        <= set(schema["properties"])


# ------------------------------------------------------------------------------------- generic tasks
def test_token_task_trains_on_pages_with_discovered_labels(tmp_path, shared_data, tiny_base, funsd_pages):
    funsd_pages(tmp_path / "pages")
    run = tmp_path / "run"
    assert main(["finetune", "token", "--data", str(tmp_path / "pages"), "--base", "tiny", "--output", str(run),
                 "train.max_steps=2", "train.batch_size=2"]) == 0
    meta = json.loads((run / "model" / "aetnet.json").read_text())
    assert meta["labels"] == ["O", "B-ANSWER", "I-ANSWER", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_documents"] == 6 and metrics["train_documents"] == 12
    # the FUNSD gold labels survive the trip through plain names and segments
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    gold = {d.id: d.labels for d in read_funsd_folder(find_funsd_root(shared_data / "funsd"))["eval"]}
    assert {r["id"]: r["gold"] for r in records} == gold


def test_fixed_label_set_and_classification_pages(tmp_path, page_image, tiny_base):
    pages = [dict(_page(id=f"p{i}", labels=None), **{"class": "invoice" if i % 2 else "receipt"}) for i in range(8)]
    (tmp_path / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    run = tmp_path / "run"
    assert main(["finetune", "classify", "--data", str(tmp_path / "pages.jsonl"), "--base", "tiny", "--output",
                 str(run), "train.max_steps=1", "train.batch_size=2", "data.labels=receipt,invoice,letter"]) == 0
    meta = json.loads((run / "model" / "aetnet.json").read_text())
    assert meta["labels"] == ["receipt", "invoice", "letter"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_documents"] + metrics["eval_documents"] == 8 and "macro_f1" in metrics


def test_qa_pages_locate_answers_and_group_questions_by_page(tmp_path, page_image, tiny_base):
    pages = [dict(_page(id=f"p{i}", labels=None), qa=[{"question": "What is the total?", "answers": ["12.00 EUR"]},
                                                      {"question": "Currency?", "answers": ["EUR"]}])
             for i in range(5)]
    (tmp_path / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    examples = read_pages(tmp_path / "pages.jsonl", "qa")["all"]
    for bad, field in (("What?", "qa"), ([{"question": 3}], "qa[0].question"), ([{"question": "Q", "answers": [1]}],
                                                                                 "qa[0].answers[0]")):
        with pytest.raises(DataError, match=rf"field '{re.escape(field)}'"):
            _parse(tmp_path, dict(_page(labels=None), qa=bad), kind="qa")
    assert [ex.answer_span for ex in examples[:2]] == [(1, 2), (2, 2)]
    run = tmp_path / "run"
    assert main(["finetune", "qa", "--data", str(tmp_path / "pages.jsonl"), "--base", "tiny", "--output", str(run),
                 "train.max_steps=1", "train.batch_size=2"]) == 0
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    eval_pages = {r["id"].rsplit("-", 1)[0] for r in records}
    assert len(records) == 2 * len(eval_pages)  # both questions of each held-out page, none of the others


def test_save_to_disk_dataset_trains_with_its_classlabel_names(tmp_path, tiny_base):
    import datasets

    names = ["O", "B-ITEM", "I-ITEM", "B-PRICE", "I-PRICE"]
    image = Image.new("RGB", (100, 100), "white")
    rows = {"id": [], "words": [], "bboxes": [], "ner_tags": [], "image": []}
    for i in range(6):
        rows["id"].append(str(i))
        rows["words"].append(["Coffee", "large", "3.50"])
        rows["bboxes"].append([[100, 100, 300, 150], [310, 100, 500, 150], [800, 100, 950, 150]])
        rows["ner_tags"].append([1, 2, 3])
        rows["image"].append(image)
    features = datasets.Features({"id": datasets.Value("string"), "words": datasets.Sequence(datasets.Value("string")),
                                  "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
                                  "image": datasets.Image()})
    ds = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 6))}).save_to_disk(tmp_path / "ds")
    run = tmp_path / "run"
    assert main(["finetune", "token", "--data", str(tmp_path / "ds"), "--base", "tiny", "--output", str(run),
                 "train.max_steps=1", "train.batch_size=2"]) == 0
    assert json.loads((run / "model" / "aetnet.json").read_text())["labels"] == names
    gold = [json.loads(line)["gold"] for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert gold == [["B-ITEM", "I-ITEM", "B-PRICE"]] * 2


def test_data_labels_is_refused_for_fixed_label_tasks():
    from aetnet.config.settings import resolve_config

    with pytest.raises(AetnetError, match="fixed label set"):
        resolve_config({"task": "funsd", "data": {"labels": ["A"]}})


def test_funsd_layout_folder_with_any_label_set(tmp_path, shared_data, tiny_base):
    """A FUNSD-layout folder of one's own forms, labelled Field/Value instead of question/answer."""
    src = shared_data / "funsd" / "dataset" / "training_data"
    names = sorted(p.stem for p in (src / "annotations").glob("*.json"))[:5]
    for split, stems in (("training_data", names[:3]), ("testing_data", names[3:])):
        (tmp_path / "forms" / split / "annotations").mkdir(parents=True)
        (tmp_path / "forms" / split / "images").mkdir()
        for stem in stems:
            data = json.loads((src / "annotations" / f"{stem}.json").read_text())
            for ent in data["form"]:
                ent["label"] = {"question": "Field", "answer": "Value", "header": "Title"}.get(ent["label"], "other")
            (tmp_path / "forms" / split / "annotations" / f"{stem}.json").write_text(json.dumps(data))
            (tmp_path / "forms" / split / "images" / f"{stem}.png").symlink_to(src / "images" / f"{stem}.png")
    import aetnet.tasks  # noqa: F401
    from aetnet.config.settings import resolve_config
    from aetnet.registry import TASKS

    task = TASKS.get("token")()
    splits = task.load(resolve_config({"task": "token", "data": {"path": str(tmp_path / "forms")}}))
    assert task.label_list() == ["O", "B-Field", "I-Field", "B-Title", "I-Title", "B-Value", "I-Value"]
    assert [len(splits["train"]), len(splits["eval"])] == [3, 2]
    # word for word the FUNSD labels, renamed
    from aetnet.tasks.funsd import parse_funsd_annotation

    original = parse_funsd_annotation(src / "annotations" / f"{names[0]}.json", src / "images" / f"{names[0]}.png")
    rename = {"QUESTION": "Field", "ANSWER": "Value", "HEADER": "Title"}
    assert splits["train"][0].labels == [lb if lb == "O" else f"{lb[:2]}{rename[lb[2:]]}" for lb in original.labels]


def test_save_to_disk_token_dataset_honours_skip(tmp_path, capsys):
    """A malformed row of a generic token dataset is skipped (and listed) under --on-bad-document skip."""
    import datasets

    names = ["O", "B-ITEM", "I-ITEM"]
    boxes = [[100, 100, 300, 150], [310, 100, 500, 150]]
    rows = {"id": ["0", "1", "2", "3"], "words": [["Coffee", "large"]] * 4,
            "bboxes": [boxes, [[100, 100, 300], boxes[1]], boxes, boxes],  # row 1: a box of three numbers
            "ner_tags": [[1, 2]] * 4, "image": [Image.new("RGB", (100, 100), "white")] * 4}
    features = datasets.Features({"id": datasets.Value("string"), "words": datasets.Sequence(datasets.Value("string")),
                                  "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
                                  "image": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "ds")
    args = ["inspect", "token", "--data", str(tmp_path / "ds"), "--check"]
    assert main(args) == 2  # error mode: the bad row stops the run
    assert "bboxes" in capsys.readouterr().err
    skipped = tmp_path / "skipped.jsonl"
    assert main(args + ["--on-bad-document", "skip", "--skipped", str(skipped)]) == 0
    (record,) = [json.loads(line) for line in skipped.read_text().splitlines()]
    assert "bboxes" in record["reason"]
