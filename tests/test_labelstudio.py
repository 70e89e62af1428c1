"""Label Studio in (convert) and out (predict --format labelstudio), and the loop between them.

The fixture ``fixtures/labelstudio_ocr_export.json`` is written by hand in Label Studio's JSON export
format for the OCR template (``rectangle``/``polygonlabels`` + ``labels`` + ``textarea`` results
sharing a region id, ``relation`` results, percent coordinates with ``original_width``/``original_height``,
rotation in degrees clockwise about the top-left corner), as Label Studio's export documentation
describes it; Label Studio itself was not run here. Its regions are placed on entities of the real
FUNSD sample 0000971160 (762x1000 pixels), whose annotated boxes give the expected values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aetnet.cli.main import main
from aetnet.data.documents.labelstudio import envelope
from aetnet.data.documents.pages import read_pages

FIXTURE = Path(__file__).parent / "fixtures" / "labelstudio_ocr_export.json"


def test_envelope_of_rotated_rectangle_and_polygon():
    # 20x10 (percent of a 100x100 page) rotated 90 degrees clockwise about (50, 50): it hangs to the left.
    assert envelope({"x": 50, "y": 50, "width": 20, "height": 10, "rotation": 90}, 100, 100) == \
        pytest.approx([40, 50, 50, 70])
    # 45 degrees: corners (50,50), (50+7.07,50+7.07), (50,50+14.14), (50-7.07... ) for a 10x10 square
    r = 10 / 2 ** 0.5
    assert envelope({"x": 50, "y": 50, "width": 10, "height": 10, "rotation": 45}, 100, 100) == \
        pytest.approx([50 - r, 50, 50 + r, 50 + 2 * r])
    assert envelope({"points": [[10, 20], [30, 5], [25, 40]]}, 200, 100) == pytest.approx([20, 5, 60, 40])


def test_convert_export_reports_every_problem_and_reads_the_regions(tmp_path, shared_data):
    images = shared_data / "funsd" / "dataset" / "training_data" / "images"
    out = tmp_path / "pages.jsonl"
    assert main(["convert", "labelstudio", str(FIXTURE), "--images", str(images), "--output", str(out)]) == 0
    pages = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pages) == 1
    page = pages[0]
    assert page["id"] == "11" and (page["width"], page["height"]) == (762, 1000)
    assert (out.parent / page["image"]).resolve() == (images / "0000971160.png").resolve()
    # typed regions: text split into words; the rotated box's envelope is the 'Licensee' box
    assert page["words"][:8] == ["Date:", "Licensee", "M.", "Hamann", "P.", "Harper,", "P.", "Martinez"]
    assert page["boxes"][0] == pytest.approx([482, 268, 518, 282], abs=0.01)
    assert page["boxes"][1] == pytest.approx([511, 309, 570, 323], abs=0.01)
    # the polygon's six words share its envelope [215, 271, 451, 287], split by length, left to right
    poly = page["boxes"][2:8]
    assert poly[0][0] == pytest.approx(215, abs=0.01) and poly[-1][2] == pytest.approx(451, abs=0.01)
    assert all(b[1] == pytest.approx(271, abs=0.01) and b[3] == pytest.approx(287, abs=0.01) for b in poly)
    assert all(a[2] < b[0] for a, b in zip(poly, poly[1:]))
    # the header region has no transcription: its words come from Tesseract
    header = [w for w, s in zip(page["words"], page["segments"]) if s == 3]
    assert header and "QUALITY" in " ".join(header).upper()
    assert page["segments"][:8] == [0, 1, 2, 2, 2, 2, 2, 2]
    assert page["links"] == [[0, 1]]
    problems = [json.loads(line) for line in out.with_name("pages.problems.jsonl").read_text().splitlines()]
    reasons = {(p["task"], p["region"]): p["reason"] for p in problems}
    assert "several labels" in reasons[(11, "a5")]
    assert "cancelled" in reasons[(12, None)]
    assert "not found" in reasons[(13, None)]
    assert len(problems) == 3
    # the converted file is valid aetnet pages: plain labels become BIO per region
    doc = read_pages(out, "token")["all"][0]
    assert doc.labels[:8] == ["B-QUESTION", "B-ANSWER", "B-ANSWER"] + ["I-ANSWER"] * 5
    assert set(doc.labels[8:]) == {"B-HEADER", "I-HEADER"}


def test_round_trip_pages_finetune_predict_labelstudio_convert(tmp_path, shared_data, tiny_base, funsd_pages):
    """Real pages -> aetnet JSONL -> finetune token -> predict --format labelstudio -> (accepted in Label
    Studio) -> convert back: the same words, boxes and the predicted entities."""
    funsd_pages(tmp_path / "pages")
    run = tmp_path / "run"
    assert main(["finetune", "token", "--data", str(tmp_path / "pages"), "--base", "tiny", "--output", str(run),
                 "train.max_steps=3", "train.batch_size=2"]) == 0
    pages_file = tmp_path / "pages" / "test.jsonl"
    tasks_file = tmp_path / "ls" / "tasks.json"
    assert main(["predict", str(run / "model"), str(pages_file), "--format", "labelstudio",
                 "--output", str(tasks_file)]) == 0
    assert main(["predict", str(run / "model"), str(pages_file), "--output", str(tmp_path / "json")]) == 0
    records = json.loads((tmp_path / "json" / "test.json").read_text())
    tasks = json.loads(tasks_file.read_text())
    # what Label Studio exports once an annotator accepts the pre-annotations unchanged
    export = [{"id": i + 1, "data": t["data"], "predictions": t["predictions"],
               "annotations": [{"id": i + 1, "result": t["predictions"][0]["result"], "was_cancelled": False}]}
              for i, t in enumerate(tasks)]
    (tmp_path / "export.json").write_text(json.dumps(export))
    images = shared_data / "funsd" / "dataset" / "testing_data" / "images"
    back = tmp_path / "back.jsonl"
    assert main(["convert", "labelstudio", str(tmp_path / "export.json"), "--images", str(images),
                 "--output", str(back)]) == 0
    original = read_pages(pages_file, "token")["all"]
    returned = read_pages(back, "token")["all"]
    assert len(returned) == len(original) == len(records) == 6
    n_entities = 0
    for doc, back_doc, record in zip(original, returned, records):
        assert back_doc.words == doc.words
        assert [v for b in back_doc.boxes for v in b] == pytest.approx([v for b in doc.boxes for v in b], abs=0.01)
        expected = ["O"] * len(doc.words)
        for ent in record["entities"]:
            for j, i in enumerate(ent["words"]):
                expected[i] = f"{'B' if j == 0 else 'I'}-{ent['type']}"
        n_entities += len(record["entities"])
        assert back_doc.labels == expected
    assert n_entities > 0
