"""Tesseract OCR wrapper: real page against its ground truth, the disk cache, clear install errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytesseract
import pytest
from PIL import Image, ImageDraw

from aetnet.data.ocr import tesseract as ocr_mod
from aetnet.data.ocr.tesseract import OcrSettings, default_cache_dir, ocr_image
from aetnet.errors import AetnetError


@pytest.fixture(scope="session")
def ocr_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ocr-cache")


class CountingOcr:
    """Wraps pytesseract.image_to_data (not the code under test) to count real Tesseract runs."""

    def __init__(self, real):
        self.real = real
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def counter(monkeypatch) -> CountingOcr:
    wrapper = CountingOcr(pytesseract.image_to_data)
    monkeypatch.setattr(pytesseract, "image_to_data", wrapper)
    return wrapper


def test_phototest_words_found_and_cached(shared_data, ocr_cache, counter):
    root = shared_data
    gt_words = (root / "ocr" / "phototest.txt").read_text().split()
    words, boxes = ocr_image(root / "ocr" / "phototest.tif", cache_dir=ocr_cache)
    assert counter.calls == 1

    # Multiset recall of the ground-truth words, counted by hand with a dict.
    found: dict[str, int] = {}
    for w in words:
        found[w] = found.get(w, 0) + 1
    hits = 0
    for w in gt_words:
        if found.get(w, 0) > 0:
            found[w] -= 1
            hits += 1
    assert hits / len(gt_words) >= 0.8, (hits, len(gt_words), words)

    width, height = Image.open(root / "ocr" / "phototest.tif").size
    assert len(boxes) == len(words)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert all(w.strip() == w and w for w in words)

    # Every "quick" of the text is found, each at its own place on the page.
    quick = [b for w, b in zip(words, boxes) if w == "quick"]
    assert len(quick) == gt_words.count("quick") >= 4
    assert len({(round(b[0]), round(b[1])) for b in quick}) == len(quick)

    # Second call: served from the cache, Tesseract not run again, identical result.
    again = ocr_image(root / "ocr" / "phototest.tif", cache_dir=ocr_cache)
    assert counter.calls == 1
    assert again == (words, boxes)
    cached = list(ocr_cache.rglob("*.json"))
    assert len(cached) == 1
    record = json.loads(cached[0].read_text())
    assert record["settings"] == {"lang": "eng", "psm": 3, "oem": None}
    assert record["words"] == words


def _synthetic_page() -> Image.Image:
    img = Image.new("L", (64, 24), 255)
    ImageDraw.Draw(img).rectangle([10, 8, 20, 16], fill=0)
    return img


def test_cache_key_depends_on_pixels_and_settings(tmp_path, counter):
    img = _synthetic_page()
    ocr_image(img, cache_dir=tmp_path)
    ocr_image(img.copy(), cache_dir=tmp_path)  # same pixels, another object: cache hit
    assert counter.calls == 1
    ocr_image(img, psm=6, cache_dir=tmp_path)  # other settings: a new run
    assert counter.calls == 2
    other = img.copy()
    other.putpixel((0, 0), 0)
    ocr_image(other, psm=6, cache_dir=tmp_path)  # one pixel changed: a new run
    assert counter.calls == 3
    assert len(list(tmp_path.rglob("*.json"))) == 3


def test_corrupt_cache_file_is_recomputed(tmp_path, counter):
    img = _synthetic_page()
    ocr_image(img, cache_dir=tmp_path)
    (cache_file,) = tmp_path.rglob("*.json")
    cache_file.write_text("{not json")
    ocr_image(img, cache_dir=tmp_path)
    assert counter.calls == 2
    assert json.loads(cache_file.read_text())["format"] == 1


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ocr"
    monkeypatch.delenv("AETNET_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "aetnet" / "ocr"


def test_settings_as_dict_and_flags():
    s = OcrSettings(lang="eng", psm=6, oem=1)
    assert s.as_dict() == {"lang": "eng", "psm": 6, "oem": 1}
    assert s.tesseract_config() == "--psm 6 --oem 1"
    assert OcrSettings().tesseract_config() == "--psm 3"


def test_missing_binary_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract"))
    with pytest.raises(AetnetError, match=re.escape("apt-get install tesseract-ocr")):
        ocr_image(_synthetic_page(), cache_dir=tmp_path)


def test_missing_language_pack(tmp_path):
    with pytest.raises(AetnetError, match="language pack.*zzz.*not installed"):
        ocr_image(_synthetic_page(), lang="eng+zzz", cache_dir=tmp_path)


def test_missing_image_file(tmp_path):
    from aetnet.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        ocr_image(tmp_path / "nope.png", cache_dir=tmp_path)
    assert ocr_mod.tesseract_version()[0].isdigit()
