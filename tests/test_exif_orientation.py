"""Phone photos: a page stored as turned pixels plus an EXIF orientation tag is read upright everywhere.

The photos are built from the real FUNSD sample 0000971160 (762x1000): saved upright as a JPEG, and
saved with its pixels turned plus the tag that turns them back (orientation 6: the viewer rotates the
stored pixels 90 degrees clockwise; 8: counter-clockwise), as a phone writes a portrait page. Each
path (training reader, OCR, predict, serve, convert labelstudio) must give for a turned photo what it
gives for the upright one: the same size, the same words within OCR noise, boxes within 1 pixel.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aetnet.data.ocr.images import image_size, open_image
from aetnet.data.ocr.tesseract import ocr_image

SAMPLE = "funsd/dataset/training_data/images/0000971160.png"
SIZE = (762, 1000)


def _save(image: Image.Image, path: Path, orientation: int | None) -> Path:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, quality=95, subsampling=0, exif=exif)
    return path


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory) -> dict[str, Path]:
    """``up`` (no tag), ``o6`` and ``o8`` (turned pixels + tag) JPEGs of one real page."""
    folder = tmp_path_factory.mktemp("photos")
    page = Image.open(shared_data / SAMPLE).convert("RGB")
    assert page.size == SIZE
    # Orientation 6 is shown after a 90-degree clockwise turn: store the page turned counter-clockwise.
    return {"up": _save(page, folder / "up.jpg", None),
            "o6": _save(page.transpose(Image.Transpose.ROTATE_90), folder / "o6.jpg", 6),
            "o8": _save(page.transpose(Image.Transpose.ROTATE_270), folder / "o8.jpg", 8)}


def _close_words(a: tuple[list[str], list[list[float]]], b: tuple[list[str], list[list[float]]]) -> None:
    """Same words within OCR noise (>= 90 % in common, in order); the boxes of >= 90 % of the words
    matched alike within 1 pixel (Tesseract splits or places a few words differently on JPEG noise)."""
    matcher = difflib.SequenceMatcher(a=a[0], b=b[0], autojunk=False)
    assert a[0] and matcher.ratio() >= 0.9, (a[0], b[0])
    pairs = [(a[1][i + t], b[1][j + t]) for i, j, n in matcher.get_matching_blocks() for t in range(n)]
    close = sum(max(abs(x - y) for x, y in zip(p, q)) <= 1 for p, q in pairs)
    assert close >= 0.9 * len(a[0]), (close, len(a[0]))


def test_header_size_and_pixels_are_upright(photos):
    up = np.asarray(open_image(photos["up"]), dtype=np.float32)
    for name in ("o6", "o8"):
        with Image.open(photos[name]) as raw:
            assert raw.size == (SIZE[1], SIZE[0])  # the stored pixels are sideways
        assert image_size(photos[name]) == SIZE
        turned = np.asarray(open_image(photos[name]), dtype=np.float32)
        assert turned.shape == up.shape
        assert np.abs(turned - up).mean() < 2.0  # JPEG noise only (a sideways or mirrored page: ~40)


def test_ocr_reads_the_upright_page(photos, tmp_path):
    up = ocr_image(photos["up"], cache_dir=tmp_path)
    for name in ("o6", "o8"):
        _close_words(up, ocr_image(photos[name], cache_dir=tmp_path))
        # a PIL image opened without turning it is turned by the OCR too (and cached apart)
        with Image.open(photos[name]) as raw:
            raw.load()
            _close_words(up, ocr_image(raw, cache_dir=tmp_path))


def test_training_reader_feeds_the_upright_page(photos, shared_data, tiny_base, tmp_path):
    """A pages.jsonl line naming a turned photo gives the windows and pixels of the upright page."""
    from aetnet.data.documents.pages import read_pages
    from aetnet.data.encoding.processor import load_processor
    from aetnet.data.encoding.windows import WindowDataset, encode_token_documents

    form = json.loads((shared_data / "funsd/dataset/training_data/annotations/0000971160.json").read_text())["form"]
    entities = [e for e in form if e["words"] and e["label"] != "other"][:12]
    words = [w["text"] for e in entities for w in e["words"]]
    boxes = [w["box"] for e in entities for w in e["words"]]
    labels = [e["label"].upper() for e in entities for _ in e["words"]]
    segments = [k for k, e in enumerate(entities) for _ in e["words"]]
    processor = load_processor(str(tiny_base / "layoutlmv3"))
    items = {}
    for name, path in photos.items():
        file = tmp_path / f"{name}.jsonl"  # no width/height: read from the image
        file.write_text(json.dumps({"id": name, "image": str(path), "words": words, "boxes": boxes,
                                    "segments": segments, "labels": labels}) + "\n")
        (doc,) = read_pages(file, "token")["all"]
        assert tuple(doc.page_size) == SIZE
        names = ["O", "B-ANSWER", "B-HEADER", "B-QUESTION", "I-ANSWER", "I-HEADER", "I-QUESTION"]
        label2id = {name: i for i, name in enumerate(names)}
        windows = encode_token_documents([doc], processor.tokenizer, label2id, 512, 128, "segment")
        items[name] = WindowDataset(windows, [doc], processor.image_processor)[0]
    for name in ("o6", "o8"):
        for key in ("input_ids", "bbox", "labels"):
            assert items[name][key].tolist() == items["up"][key].tolist()
        diff = (items[name]["pixel_values"] - items["up"]["pixel_values"]).abs().mean().item()
        assert diff < 0.02  # normalised pixels in [-1, 1]: JPEG noise only


@pytest.fixture(scope="module")
def predictor(funsd_run):
    from aetnet.predict.predictor import Predictor

    return Predictor(funsd_run / "model")


def _as_ocr(records: list[dict]) -> tuple[list[str], list[list[float]]]:
    (record,) = records
    return [w["text"] for w in record["words"]], [w["box"] for w in record["words"]]


def test_predict_and_serve_see_the_upright_page(photos, predictor):
    pytest.importorskip("fastapi")
    from aetnet.serve.app import create_app
    from tests.test_serve import InProcessServer, post_file

    up = predictor.predict_file(photos["up"])
    assert up[0]["size"] == list(SIZE)
    with InProcessServer(create_app(predictor)) as base:
        for name in ("o6", "o8"):
            got = predictor.predict_file(photos[name])
            assert got[0]["size"] == list(SIZE)
            _close_words(_as_ocr(up), _as_ocr(got))
            with Image.open(photos[name]) as raw:  # a PIL image opened as stored (Python API)
                assert predictor.predict_image(raw)["size"] == list(SIZE)
            status, served, _ = post_file(base, photos[name])
            assert status == 200 and served[0]["size"] == list(SIZE)
            assert _as_ocr(served) == _as_ocr(got)  # the upload is decoded from memory: the same page


def test_convert_labelstudio_reads_regions_on_the_upright_page(photos, tmp_path):
    """Label Studio shows and annotates the upright page: its percent boxes refer to 762x1000."""
    from aetnet.cli.main import main

    width, height = SIZE

    def region(rid, box, text=None):
        value = {"x": 100 * box[0] / width, "y": 100 * box[1] / height, "width": 100 * (box[2] - box[0]) / width,
                 "height": 100 * (box[3] - box[1]) / height, "rotation": 0}
        common = {"id": rid, "to_name": "image", "original_width": width, "original_height": height}
        items = [{**common, "from_name": "label", "type": "labels", "value": {**value, "labels": ["KEY"]}}]
        if text:
            items.append({**common, "from_name": "transcription", "type": "textarea",
                          "value": {**value, "text": [text]}})
        return items

    result = region("a", [482, 268, 518, 282], "Date:") + region("b", [0, 500, 762, 1000])  # b: filled by OCR
    export = [{"id": k, "data": {"ocr": f"/data/upload/1/abcd1234-{name}.jpg"},
               "annotations": [{"result": result}]} for k, name in enumerate(("up", "o6", "o8"))]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(export))
    out = tmp_path / "pages.jsonl"
    assert main(["convert", "labelstudio", str(source), "--images", str(photos["up"].parent),
                 "--output", str(out)]) == 0
    pages = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(pages) == 3
    up = pages[0]
    assert (up["width"], up["height"]) == SIZE and up["words"][0] == "Date:"
    assert up["boxes"][0] == pytest.approx([482, 268, 518, 282], abs=0.01)
    for page in pages[1:]:
        assert (page["width"], page["height"]) == SIZE
        assert page["boxes"][0] == pytest.approx(up["boxes"][0], abs=0.01)
        _close_words((up["words"], up["boxes"]), (page["words"], page["boxes"]))


def test_dataset_rows_are_read_upright(photos, tmp_path):
    """Pages stored in a ``save_to_disk`` dataset (hub copies, RVL-CDIP rows) and Hugging Face image cells."""
    import datasets

    from aetnet.data.documents.page_refs import DatasetRow
    from aetnet.data.documents.validate import expect_image

    raw = photos["o6"].read_bytes()
    table = datasets.Dataset.from_dict({"image": [{"bytes": raw, "path": None}]},
                                       features=datasets.Features({"image": datasets.Image()}))
    table.save_to_disk(str(tmp_path / "ds"))
    row = DatasetRow(str(tmp_path / "ds"), None, 0)
    assert row.size() == SIZE and row.load().size == SIZE
    assert expect_image({"bytes": raw, "path": None}, "image", "row 0").size == SIZE
    assert expect_image({"bytes": None, "path": str(photos["o8"])}, "image", "row 1").size == SIZE


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos:pos + 12 + length])
        pos += 12 + length
    return chunks


def test_png_orientation_is_read_without_decoding_and_a_late_exif_chunk_still_counts(tmp_path):
    # Pillow decodes a whole PNG to look for an eXIf chunk after the pixels; aetnet reads the chunk headers
    # instead, so header-only reads stay header-only, and a tag stored after the pixels still turns the page
    from aetnet.data.ocr.images import orientation

    plain, tagged = tmp_path / "plain.png", tmp_path / "tagged.png"
    Image.new("RGB", (30, 20), "white").save(plain)
    with Image.open(plain) as img:
        assert orientation(img) == 1
        assert img.tile  # the pixels were not decoded
    assert image_size(plain) == (30, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 20), "white").save(tagged, exif=exif)
    chunks = _png_chunks(tagged.read_bytes())
    assert [c[4:8] for c in chunks].index(b"eXIf") < [c[4:8] for c in chunks].index(b"IDAT")
    late = tmp_path / "late.png"  # the eXIf chunk moved after the pixel data, before IEND
    others = [c for c in chunks if c[4:8] != b"eXIf"]
    late.write_bytes(tagged.read_bytes()[:8] + b"".join(others[:-1]) + chunks[[c[4:8] for c in chunks].index(b"eXIf")]
                     + others[-1])
    for path in (tagged, late):
        with Image.open(path) as img:
            assert orientation(img) == 6
        assert image_size(path) == (20, 30)
        assert open_image(path).size == (20, 30)
