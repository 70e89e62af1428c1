"""predict streams: a long PDF is read and predicted page by page with bounded memory, and the pages
that need OCR are recognised first in a process pool whose cache entries the predictor then finds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytesseract
from PIL import Image, ImageDraw, ImageFont

from aetnet.data.ocr.tesseract import OcrSettings
from aetnet.predict.ocr import prefetch_ocr
from aetnet.predict.predictor import Predictor, iter_document, predict_paths


def _page(text: str, size=(850, 1100)) -> Image.Image:
    page = Image.new("RGB", size, "white")
    ImageDraw.Draw(page).text((60, 150), text, fill="black", font=ImageFont.load_default(size=40))
    return page


def _pdf(path: Path, pages: int, text: str = "INVOICE NUMBER 4711") -> Path:
    images = [_page(text) for _ in range(pages)]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=100)
    return path


def test_iter_document_renders_on_demand(tmp_path):
    import pypdfium2 as pdfium

    pdf = _pdf(tmp_path / "a.pdf", 3)
    rendered = []
    real = pdfium.PdfPage.render

    def counting(self, *args, **kwargs):  # counts PDFium renders (not the code under test)
        rendered.append(1)
        return real(self, *args, **kwargs)

    pdfium.PdfPage.render = counting
    try:
        pages = iter_document(pdf)
        first = next(pages)
        assert len(rendered) == 1 and first.image.size == (1700, 2200)
        assert len(list(pages)) == 2 and len(rendered) == 3
    finally:
        pdfium.PdfPage.render = real


STREAM = """
import resource, sys
from aetnet.predict.predictor import Predictor, predict_paths
predictor = Predictor(sys.argv[1], ocr="always", ocr_cache=sys.argv[3])
predict_paths(predictor, [sys.argv[2]], None, ocr_workers=1)  # warm-up: every page's words now cached
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = predict_paths(predictor, [sys.argv[2]], sys.argv[4], visualize=True, ocr_workers=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(next(iter(results.values()))), (after - before) * 1024)
"""


def test_long_pdf_predicted_with_bounded_memory(funsd_run, tmp_path):
    """20 pages rendered at 200 dpi are 20 x 11 MB of pixels; peak RSS grows by far less."""
    pdf = _pdf(tmp_path / "long.pdf", 20)
    proc = subprocess.run([sys.executable, "-c", STREAM, str(funsd_run), str(pdf), str(tmp_path / "ocr"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    pages, grown = (int(v) for v in proc.stdout.split()[-2:])
    assert pages == 20
    assert len(list((tmp_path / "out").glob("long-page*.png"))) == 20
    assert grown < 80 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB over 220 MB of pages"


def test_pool_prefetch_fills_the_cache_the_predictor_reads(funsd_run, tmp_path, monkeypatch):
    files = []
    for i, text in enumerate(["TOTAL AMOUNT 250", "DATE 12 MARCH", "NAME JOHN SMITH"]):
        files.append(tmp_path / f"p{i}.png")
        _page(text, (700, 300)).save(files[-1])
    files.append(_pdf(tmp_path / "two.pdf", 2, "ACCOUNT 99"))
    serial = Predictor(funsd_run, ocr_cache=tmp_path / "cold")
    expected = predict_paths(serial, files, None, ocr_workers=1)

    predictor = Predictor(funsd_run, ocr_cache=tmp_path / "pool")
    recognised = prefetch_ocr(files, "auto", OcrSettings(lang=predictor.ocr_lang, psm=predictor.ocr_psm),
                              tmp_path / "pool", 2, 200)
    assert recognised == 5  # 3 images + 2 scanned PDF pages
    calls = []
    real = pytesseract.image_to_data
    monkeypatch.setattr(pytesseract, "image_to_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = predict_paths(predictor, files, None, ocr_workers=1)
    assert calls == []  # every page's words came from the pool's cache entries
    assert got == expected
