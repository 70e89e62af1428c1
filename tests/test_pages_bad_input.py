"""Hostile and broken pages.jsonl lines (issue 22): each one clear error naming the line, or listed in skip mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from aetnet.data.documents.pages import read_pages
from aetnet.data.documents.screen import BadDocuments, check_document
from aetnet.errors import AetnetError, DataError
from tests.helpers import page_record


@pytest.fixture()
def folder(tmp_path) -> Path:
    Image.new("RGB", (200, 100), "white").save(tmp_path / "p.png")
    return tmp_path


def _page(**fields):
    return page_record("p.png", **fields)


def _write(folder: Path, *pages, name="pages.jsonl", raw: str | None = None) -> Path:
    path = folder / name
    path.write_text(raw if raw is not None else "".join(json.dumps(p) + "\n" for p in pages))
    return path


def _error(path: Path, kind="token") -> str:
    with pytest.raises(DataError) as err:
        for docs in read_pages(path, kind).values():
            for doc in docs:
                check_document(getattr(doc, "document", doc), "word", True)
    return str(err.value)


# ----------------------------------------------------------------------------- numbers past the float range
HUGE = "1" + "0" * 400


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_a_coordinate_of_ten_to_the_400_is_a_data_error(folder, mode):
    line = json.dumps(_page(boxes=[[10, 10, 50, 20], [60, 10, 90, 20], [95, 10, 0, 20]]))
    path = _write(folder, raw=line.replace("[95, 10, 0, 20]", f"[95, 10, {HUGE}, 20]") + "\n"
                  + json.dumps(_page(id="p2")) + "\n")
    if mode == "error":
        message = _error(path)
        assert message.startswith(f"{path}:1, field 'boxes[2][2]': expected a finite number, got a 401-digit")
        assert len(message) - len(str(path)) < 200  # the number is not spelt out (the path's length varies)
    else:
        policy = BadDocuments("skip")
        docs = read_pages(path, "token", policy)["all"]
        assert [d.id for d in docs] == ["p2"]
        assert [r["source"] for r in policy.records] == [f"{path}:1"]


@pytest.mark.parametrize("fields, field", [
    ({"width": 0, "height": 100}, "width"),
    ({"segments": [0, 1, 0]}, "segments[2]"),
    ({"segments": [0, 1, 1], "links": [[0, 0]]}, "links[0][1]"),
    ({"labels": None, "entities": [{"label": "KEY", "words": [0]}]}, "entities[0].words[0]"),
])
def test_an_integer_of_400_digits_is_a_data_error_in_every_integer_field(folder, fields, field):
    line = json.dumps(_page(**fields))
    at = line.rindex("0]") if field != "width" else line.index('"width": 0') + len('"width": ')
    path = _write(folder, raw=line[:at] + HUGE + line[at + 1:] + "\n")
    message = _error(path)
    assert message.startswith(f"{path}:1, field '{field}': expected an integer below 2**53, got a 401-digit "
                              "integer"), message
    policy = BadDocuments("skip")
    assert read_pages(path, "token", policy)["all"] == [] and len(policy.records) == 1


def test_an_integer_too_long_for_python_to_read_is_a_data_error(folder):
    path = _write(folder, raw=json.dumps(_page()).replace('"p1"', "1" + "0" * 5000) + "\n")
    assert _error(path).startswith(f"{path}:1: invalid JSON number")


# ----------------------------------------------------------------------------- BIOES / BILOU tags
@pytest.mark.parametrize("tags, bio", [
    (["S-KEY", "B-VALUE", "E-VALUE"], ["B-KEY", "B-VALUE", "I-VALUE"]),
    (["B-VALUE", "I-VALUE", "E-VALUE"], ["B-VALUE", "I-VALUE", "I-VALUE"]),
    (["S-KEY", "S-VALUE", "O"], ["B-KEY", "B-VALUE", "O"]),
    (["U-KEY", "B-VALUE", "L-VALUE"], ["B-KEY", "B-VALUE", "I-VALUE"]),
    (["B-KEY", "I-KEY", "B-VALUE"], ["B-KEY", "I-KEY", "B-VALUE"]),  # BIO stays as given
])
def test_tagged_labels_become_bio(folder, tags, bio):
    [doc] = read_pages(_write(folder, _page(labels=tags)), "token")["all"]
    assert doc.labels == bio
    # one entity per tag span: the segments follow the converted tags
    assert len({doc.segment_ids[i] for i, t in enumerate(bio) if t != "O"}) == sum(t[0] == "B" for t in bio)


@pytest.mark.parametrize("tags, field, text", [
    (["S-KEY", "E-VALUE", "O"], "labels[1]", "tag 'E-VALUE' of word 1 continues no VALUE entity"),
    (["B-KEY", "E-VALUE", "O"], "labels[1]", "continues no VALUE entity"),
    (["S-KEY", "I-KEY", "O"], "labels[1]", "continues no KEY entity"),  # S- closes the entity
    (["B-KEY", "VALUE", "O"], "labels", "mix tags ('B-KEY') and plain names ('VALUE')"),
    (["S-KEY", "U-VALUE", "O"], "labels", "mix BIOES tags"),
])
def test_inconsistent_tags_are_one_error(folder, tags, field, text):
    path = _write(folder, _page(labels=tags))
    message = _error(path)
    assert message.startswith(f"{path}:1, field '{field}': ") and text in message


# ----------------------------------------------------------------------------- qa, links
def test_a_qa_answer_not_among_the_words_is_an_error(folder):
    path = _write(folder, _page(labels=None, qa=[{"question": "Total?", "answers": ["12.00"]},
                                                 {"question": "Date?", "answers": ["1 May 2024"]}]))
    message = _error(path, "qa")
    assert message.startswith(f"{path}:1, field 'qa[1].answers': no answer of ['1 May 2024'] is among")
    # the answer that is there is found (the check is not refusing everything)
    path = _write(folder, _page(labels=None, qa=[{"question": "Total?", "answers": ["12.00 EUR"]}]))
    [example] = read_pages(path, "qa")["all"]
    assert example.answer_span == (1, 2)


@pytest.mark.parametrize("links, text", [
    ([[0, 7]], "link [0, 7] names entity id 7, which no word of the page carries (ids: 0, 1)"),
    ([[1, 1]], "link [1, 1] joins entity 1 to itself"),
])
def test_bad_links_are_errors_and_listed_in_skip_mode(folder, links, text):
    path = _write(folder, _page(segments=[0, 1, 1], links=links), _page(id="p2", segments=[0, 1, 1], links=[[0, 1]]))
    assert _error(path).startswith(f"{path}:1, field 'links[0]': {text}")
    policy = BadDocuments("skip")
    assert [d.id for d in read_pages(path, "token", policy)["all"]] == ["p2"]
    assert [(r["id"], r["source"]) for r in policy.records] == [("p1", f"{path}:1")]


# ----------------------------------------------------------------------------- splits, duplicates
def test_empty_train_file_beside_a_test_file_is_an_error(folder):
    import aetnet.tasks  # noqa: F401
    from aetnet.config.settings import resolve_config
    from aetnet.registry import TASKS

    _write(folder, name="train.jsonl", raw="\n")
    _write(folder, _page(id="e1"), _page(id="e2"), _page(id="e3"), name="test.jsonl")
    for task_name in ("token", "re"):
        task = TASKS.get(task_name)()
        with pytest.raises(AetnetError, match=r"train.jsonl has no usable page beside test.jsonl; put the training"):
            task.load(resolve_config({"task": task_name, "data": {"path": str(folder)}}))
    (folder / "train.jsonl").unlink()
    _write(folder, *[_page(id=f"e{i}", labels=None, **{"class": "invoice"}) for i in range(3)], name="test.jsonl")
    with pytest.raises(AetnetError, match=r"train.jsonl is missing beside test.jsonl"):
        TASKS.get("classify")().load(resolve_config({"task": "classify", "data": {"path": str(folder)}}))


def test_a_duplicate_page_id_is_listed_in_skip_mode_and_the_run_goes_on(folder):
    path = _write(folder, _page(), _page(), _page(id="p3"))
    policy = BadDocuments("skip")
    assert [d.id for d in read_pages(path, "token", policy)["all"]] == ["p1", "p3"]
    [record] = policy.records
    assert record["source"] == f"{path}:2" and "used twice (also at" in record["reason"]
    assert policy.given == 3


# ----------------------------------------------------------------------------- images
def _broken_images(folder: Path) -> dict[str, tuple[str, str]]:
    png = (folder / "p.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[:60])        # header whole, pixel data cut
    (folder / "garbage.png").write_bytes(b"not an image at all")
    Image.new("1", (11000, 11000)).save(folder / "bomb.png")  # 121 M pixels, over the 120 M limit
    (folder / "folder.png").mkdir()
    return {"truncated.png": ("image", "cannot be decoded"), "garbage.png": ("image", "cannot be"),
            "bomb.png": ("image", "too large to be a page"), "missing.png": ("image", "does not exist"),
            "folder.png": ("image", "is a directory, not an image file")}


@pytest.mark.parametrize("sized", [False, True], ids=["size-from-image", "size-given"])
def test_image_errors_name_the_line_that_refers_to_the_image(folder, sized):
    size = {"width": 200, "height": 100} if sized else {}
    for name, (field, text) in _broken_images(folder).items():
        path = _write(folder, _page(id="ok"), _page(id="x", image=name, **size))
        message = _error(path)
        assert message.startswith(f"{path}:2, field '{field}': "), (name, message)
        assert text in message and name in message, (name, message)
        assert "does not exist" not in message or name == "missing.png"


def test_a_data_url_is_refused_and_shortened(folder):
    url = "data:image/png;base64," + "A" * 130_000
    path = _write(folder, _page(image=url))
    message = _error(path)
    assert message.startswith(f"{path}:1, field 'image': is a data: URL (data:image/png") and len(message) < 400
    policy = BadDocuments("skip")
    read_pages(path, "token", policy)
    assert len(json.dumps(policy.records)) < 1000


def test_an_over_long_image_name_is_a_data_error(folder):
    path = _write(folder, _page(image="x" * 300 + ".png"))
    message = _error(path)
    assert message.startswith(f"{path}:1, field 'image': image path ") and "cannot be used" in message
    assert len(message) - len(str(path)) < 300  # the 300-character name is cut (the folder's length varies)


def test_a_pdf_without_pages_says_so(tmp_path):
    from aetnet.data.ocr.pdftext import iter_pdf

    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [] /Count 0 >>"]
    data, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(data))
        data += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(data)
    data += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    data += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    data += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    (tmp_path / "empty.pdf").write_bytes(data)
    with pytest.raises(DataError) as err:
        list(iter_pdf(tmp_path / "empty.pdf", dpi=72))
    # PDFium opens a page-less PDF in a fresh process, and refuses it after other documents were opened in the
    # process (its last error is process-wide): either way one sentence naming the file.
    assert str(err.value) in (
        f"{tmp_path / 'empty.pdf'}: PDF has no pages; give a PDF with at least one page",
        f"{tmp_path / 'empty.pdf'}: cannot be opened as a PDF (Failed to load document (PDFium: Data format "
        "error).); it is corrupt, encrypted or not a PDF: re-export it")
    (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.4\nnothing")
    with pytest.raises(DataError, match="cannot be opened as a PDF"):
        list(iter_pdf(tmp_path / "junk.pdf", dpi=72))


def test_predict_on_a_pages_file_names_the_line_of_a_broken_image(folder, funsd_run):
    from aetnet.predict.predictor import Predictor, predict_page_file

    _broken_images(folder)
    predictor = Predictor(funsd_run)
    for name, text in (("truncated.png", "cannot be decoded"), ("bomb.png", "too large to be a page")):
        path = _write(folder, _page(id="ok", labels=None), _page(id="x", image=name, labels=None, width=200,
                                                                   height=100))
        with pytest.raises(DataError) as err:
            predict_page_file(predictor, path)
        assert str(err.value).startswith(f"{path}:2, field 'image': image {folder / name}: "), str(err.value)
        assert text in str(err.value)
    # a page without words goes to OCR: its unreadable image names the line too
    path = _write(folder, {"id": "o", "image": "garbage.png"})
    with pytest.raises(DataError, match=rf"^{path}:1, field 'image': image {folder / 'garbage.png'}: "):
        predict_page_file(predictor, path)


def test_data_labels_given_as_bioes_tags_give_the_bio_label_list():
    from aetnet.tasks.generic import bio_label_list

    assert bio_label_list(["O", "S-KEY", "B-KEY", "I-KEY", "E-KEY", "S-TOTAL"]) == [
        "O", "B-KEY", "I-KEY", "B-TOTAL", "I-TOTAL"]
    assert bio_label_list(["KEY", "TOTAL"]) == ["O", "B-KEY", "I-KEY", "B-TOTAL", "I-TOTAL"]
    with pytest.raises(AetnetError, match=r"data.labels mix tags \('B-KEY'\) and plain names \('TOTAL'\)"):
        bio_label_list(["B-KEY", "TOTAL"])


def test_predict_inputs_refuse_an_image_over_the_pixel_limit_from_its_header(tmp_path):
    """`aetnet predict big.png` (aetnet.data.ocr.inputs): 121 Mpx, over the 120 Mpx limit but under PIL's own error
    threshold (twice it), is refused from the header, as training readers and the service refuse it, instead of
    being decoded (a 16 KB file that decodes to ~360 MB)."""
    from PIL import Image

    from aetnet.data.ocr.inputs import load_pages
    from aetnet.errors import DataError

    big = tmp_path / "big.png"
    Image.new("1", (11000, 11000)).save(big)
    with pytest.raises(DataError, match="too large to be a page"):
        load_pages(big)
