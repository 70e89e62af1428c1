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


def test_bad_input_is_listed_and_the_convert_goes_on(tmp_path, images):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    long_name = "n" * 300 + ".png"
    good = rect("a", 10, 10, 10, 2, "Date:")
    string_text = rect("s", 10, 20, 20, 2, None) + [
        {"id": "s", "type": "textarea", "from_name": "transcription", "to_name": "image",
         "original_width": W, "original_height": H,
         "value": {"x": 10, "y": 20, "width": 20, "height": 2, "text": "Total due"}}]
    dup = rect("d", 10, 30, 10, 2, "first") + rect("d", 40, 30, 10, 2, "second")
    export = [
        {"id": 1, "data": {"ocr": "/data/upload/1/8f1a2b3c-page.png"}, "annotations": {"result": good}},
        task(2, good + ["a string item"]),
        task(3, good, f"/data/upload/1/{long_name}"),
        task(4, good + string_text),
        task(5, good + rect("o", 95, 10, 10, 2, "over") + rect("u", -3, 10, 10, 2, "under")),
        task(6, good + dup),
        task(7, good, "/data/upload/1/broken.png"),
        "not a task",
    ]
    pages, problems = convert(tmp_path, export, images)
    reasons = {(p["task"], p["region"]): p["reason"] for p in problems}
    assert "annotations is dict, not a list" in reasons[(1, None)]
    assert "result item 3 is str" in reasons[(2, None)]
    assert "cannot be looked up" in reasons[(3, None)] and len(reasons[(3, None)]) < 400
    assert "outside 0-100 (105)" in reasons[(5, "o")] and "outside 0-100 (-3)" in reasons[(5, "u")]
    assert "reuses the id" in reasons[(6, "d")]
    assert "broken.png" in reasons[(7, None)] and "cannot be read" in reasons[(7, None)]
    assert "task 7 of the export is str" in reasons[(None, None)]
    by_id = {p["id"]: p for p in pages}
    assert sorted(by_id) == ["2", "4", "5", "6"]
    assert by_id["4"]["words"] == ["Date:", "Total", "due"]  # the string is the text, not one word per letter
    assert by_id["5"]["words"] == ["Date:"]
    assert by_id["6"]["words"] == ["Date:", "first"]  # the second region with id d is reported, not merged
    assert by_id["6"]["boxes"][1] == pytest.approx([76.2, 300, 152.4, 320], abs=0.01)
    assert len(problems) == 8
