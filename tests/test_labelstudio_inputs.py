"""``aetnet convert labelstudio`` on real-world exports: every region or relation that is not converted
has a problems line, relation directions, JSON-MIN, image references of every storage, bad input.

Tasks are written here in Label Studio's JSON export format (result items sharing a region ``id``,
``relation`` items with ``from_id``/``to_id``/``direction`` as its ``RelationStore.serialize`` writes
them, ``ellipse``/``keypoint``/``brushlabels`` as in its documentation's shape examples) over the real
FUNSD sample 0000971160 (762x1000), so every expected box is worked by hand from percents.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aetnet.cli.main import main

SAMPLE = "funsd/dataset/training_data/images/0000971160.png"
W, H = 762, 1000


def rect(rid: str, x: float, y: float, w: float, h: float, text: str | None = "word", label: str = "KEY") -> list:
    """The three items of one OCR-template region (percent coordinates)."""
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0}
    common = {"id": rid, "to_name": "image", "original_width": W, "original_height": H, "image_rotation": 0}
    items = [{**common, "from_name": "bbox", "type": "rectangle", "value": dict(value)},
             {**common, "from_name": "label", "type": "labels", "value": {**value, "labels": [label]}}]
    if text is not None:
        items.append({**common, "from_name": "transcription", "type": "textarea", "value": {**value, "text": [text]}})
    return items


def relation(a: str, b: str, direction: str | None = "right") -> dict:
    item = {"from_id": a, "to_id": b, "type": "relation", "labels": []}
    if direction is not None:
        item["direction"] = direction
    return item


def task(tid: int, result: list, ref: str = "/data/upload/1/8f1a2b3c-page.png") -> dict:
    return {"id": tid, "data": {"ocr": ref}, "annotations": [{"id": tid, "result": result}]}


@pytest.fixture
def images(shared_data, tmp_path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(shared_data / SAMPLE, folder / "8f1a2b3c-page.png")
    return folder


def convert(tmp_path: Path, export, images: Path) -> tuple[list[dict], list[dict]]:
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export))
    out = tmp_path / "out" / "pages.jsonl"
    assert main(["convert", "labelstudio", str(source), "--images", str(images), "--output", str(out)]) == 0
    pages = [json.loads(line) for line in out.read_text().splitlines()]
    report = out.with_name("pages.problems.jsonl")
    problems = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return pages, problems


def test_other_region_types_and_broken_relations_each_get_a_problem_line(tmp_path, images):
    ellipse = {"id": "e1", "type": "ellipselabels", "to_name": "image", "from_name": "shape",
               "original_width": W, "original_height": H,
               "value": {"x": 50, "y": 50, "radiusX": 5, "radiusY": 3, "rotation": 0, "ellipselabels": ["KEY"]}}
    ellipse_text = {**ellipse, "type": "textarea", "from_name": "transcription",
                    "value": {"x": 50, "y": 50, "radiusX": 5, "radiusY": 3, "rotation": 0, "text": ["oval"]}}
    keypoint = {"id": "k1", "type": "keypointlabels", "to_name": "image", "from_name": "kp",
                "value": {"x": 10, "y": 10, "width": 0.5, "keypointlabels": ["KEY"]}}
    brush = {"id": "b1", "type": "brushlabels", "to_name": "image", "from_name": "brush",
             "value": {"format": "rle", "rle": [0, 1, 2], "brushlabels": ["KEY"]}}
    result = (rect("a", 10, 10, 10, 2, "Date:") + rect("b", 30, 10, 10, 2, "1999")
              + [ellipse, ellipse_text, keypoint, brush,
                 relation("a", "b"), relation("a", "e1"), relation("a", "zz"), relation("b", "b")])
    pages, problems = convert(tmp_path, [task(1, result)], images)
    (page,) = pages
    assert page["words"] == ["Date:", "1999"] and page["links"] == [[0, 1]]  # no [0, 0], no link to e1
    by_region = {}
    for p in problems:
        assert p["task"] == 1
        by_region.setdefault(p["region"], []).append(p["reason"])
    assert "ellipselabels" in by_region["e1"][0] and "not converted" in by_region["e1"][0]
    assert "keypointlabels" in by_region["k1"][0] and "brushlabels" in by_region["b1"][0]
    relation_reasons = by_region["a"] + by_region["b"]
    assert any("a -> e1" in r and "e1 was not converted" in r for r in relation_reasons)
    assert any("a -> zz" in r and "does not have" in r for r in relation_reasons)
    assert any("b -> b" in r and "itself" in r for r in relation_reasons)
    assert len(problems) == 6


def test_relation_direction_right_left_bi(tmp_path, images):
    regions = rect("a", 10, 10, 10, 2, "Date:") + rect("b", 30, 10, 10, 2, "1999") + rect("c", 50, 10, 10, 2, "x")
    export = [task(1, regions + [relation("a", "b", "right"), relation("c", "b", None)]),
              task(2, regions + [relation("a", "b", "left")]),
              task(3, regions + [relation("a", "c", "bi")])]
    pages, problems = convert(tmp_path, export, images)
    assert problems == []
    assert [p["links"] for p in pages] == [[[0, 1], [2, 1]], [[1, 0]], [[0, 2], [2, 0]]]


def test_json_min_export_is_named_with_the_export_to_use(tmp_path, images, capsys):
    record = {"ocr": "/data/upload/1/8f1a2b3c-page.png", "id": 1, "annotator": 1, "annotation_id": 1,
              "bbox": [{"x": 10, "y": 10, "width": 10, "height": 2, "rotation": 0,
                        "original_width": W, "original_height": H}],
              "transcription": ["Date:"], "label": [{"x": 10, "y": 10, "width": 10, "height": 2,
                                                     "labels": ["KEY"], "original_width": W, "original_height": H}]}
    source = tmp_path / "min.json"
    source.write_text(json.dumps([record]))
    assert main(["convert", "labelstudio", str(source), "--images", str(images),
                 "--output", str(tmp_path / "p.jsonl")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is a JSON-MIN export" in line and "Export -> JSON" in line


def test_image_references_of_every_storage_resolve_under_images(tmp_path, shared_data):
    root = tmp_path / "storage"
    sample = shared_data / SAMPLE
    for rel in ("scans/batch1/x.png", "scans/batch2/x.png", "3/1a2b3c4d-up.png", "bucket/s3/y.png",
                "gbucket/g/z.png", "web/v.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, root / rel)
    refs = ["/data/local-files/?d=scans/batch1/x.png", "/data/local-files/?d=scans%2Fbatch2%2Fx.png",
            "/data/upload/3/1a2b3c4d-up.png", "s3://bucket/s3/y.png", "gs://gbucket/g/z.png",
            "https://example.com/web/v.png?X-Amz-Signature=1", "/data/local-files/?d=scans/batch3/missing.png",
            "s3://bucket/absent.png"]
    export = [task(k, rect("a", 10, 10, 10, 2, "Date:"), ref) for k, ref in enumerate(refs)]
    pages, problems = convert(tmp_path, export, root)
    images = [(tmp_path / "out" / p["image"]).resolve() for p in pages]
    assert images == [(root / rel).resolve() for rel in ("scans/batch1/x.png", "scans/batch2/x.png",
                                                           "3/1a2b3c4d-up.png", "bucket/s3/y.png", "gbucket/g/z.png",
                                                           "web/v.png")]
    assert [(p["task"], "not found" in p["reason"]) for p in problems] == [(6, True), (7, True)]
    # --images may also be a folder inside the storage root: the path's tail is looked up
    pages, problems = convert(tmp_path, [task(1, rect("a", 10, 10, 10, 2, "Date:"), refs[1])], root / "scans")
    assert problems == []
    assert (tmp_path / "out" / pages[0]["image"]).resolve() == (root / "scans/batch2/x.png").resolve()


GOOD = rect("a", 10, 10, 10, 2, "Date:")
STRING_TEXT = rect("s", 10, 20, 20, 2, None) + [
    {"id": "s", "type": "textarea", "from_name": "transcription", "to_name": "image", "original_width": W,
     "original_height": H, "value": {"x": 10, "y": 20, "width": 20, "height": 2, "text": "Total due"}}]
BAD_TASKS = {  # name: (the bad task, its expected problem (region, reason part), the words kept from it)
    "annotations as an object": (
        {"id": 9, "data": {"ocr": "/data/upload/1/8f1a2b3c-page.png"}, "annotations": {"result": GOOD}},
        (None, "annotations is dict, not a list"), None),
    "a result item that is a string": (task(9, GOOD + ["a string item"]), (None, "result item 3 is str"), ["Date:"]),
    "a 300-character file name": (task(9, GOOD, "/data/upload/1/" + "n" * 300 + ".png"),
                                  (None, "cannot be looked up"), None),
    "a transcription given as a string": (task(9, GOOD + STRING_TEXT), None, ["Date:", "Total", "due"]),
    "percent over 100": (task(9, GOOD + rect("o", 95, 10, 10, 2, "over")), ("o", "outside 0-100 (105)"), ["Date:"]),
    "percent below 0": (task(9, GOOD + rect("u", -3, 10, 10, 2, "under")), ("u", "outside 0-100 (-3)"), ["Date:"]),
    "a reused region id": (task(9, GOOD + rect("d", 10, 30, 10, 2, "first") + rect("d", 40, 30, 10, 2, "second")),
                           ("d", "reuses the id"), ["Date:", "first"]),
    "an unreadable image": (task(9, GOOD, "/data/upload/1/broken.png"), (None, "cannot be read"), None),
    "a task that is a string": ("not a task", (None, "task 1 of the export is str"), None),
}


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_bad_input_is_one_problem_line_and_the_convert_goes_on(case, tmp_path, images):
    """A good task, then the bad one: the good page is written, the bad input is one problem line (or,
    for a string transcription, read as the text it is), nothing raises."""
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad, expected, kept = BAD_TASKS[case]
    pages, problems = convert(tmp_path, [task(1, GOOD), bad], images)
    assert pages[0]["id"] == "1" and pages[0]["words"] == ["Date:"]
    assert [p["words"] for p in pages[1:]] == ([kept] if kept else [])
    if expected is None:
        assert problems == []
    else:
        (problem,) = problems
        assert problem["region"] == expected[0] and expected[1] in problem["reason"], problem
        assert len(problem["reason"]) < 400  # the 300-character name is shortened
    if case == "a reused region id":  # the first region keeps its own box: 10-20 % of 762, 30-32 % of 1000
        assert pages[1]["boxes"][1] == pytest.approx([76.2, 300, 152.4, 320], abs=0.01)
