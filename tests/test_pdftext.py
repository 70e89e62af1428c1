"""PDF text layers: PDFs drawn with matplotlib's PDF backend give their words back at the positions
matplotlib laid them out at; image-only PDFs fall back to OCR; ``--ocr never`` on them is one error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from aetnet.cli.main import main
from aetnet.data.ocr.pdftext import TextLayer, choose_source, read_pdf
from aetnet.errors import DataError
from aetnet.predict.predictor import PDF_DPI, Predictor, line_segments

SCALE = PDF_DPI / 72  # PDF points -> pixels of the rendered page
# (text, x, y baseline in points from the bottom, font size): two lines, then one word in a larger font.
WORDS = [("Invoice", 72, 700, 14), ("number:", 160, 700, 14), ("4711", 260, 700, 14),
         ("Total", 72, 640, 11), ("amount", 130, 640, 11), ("250.00", 210, 640, 11), ("EUR", 280, 640, 11),
         ("Thanks", 300, 400, 24)]
LINES = [0, 0, 0, 1, 1, 1, 1, 2]


def _matplotlib_pdf(path: Path, words=WORDS, rotate: int = 0) -> list[list[float]]:
    """A letter-size PDF with ``words`` drawn as text; returns each word's layout box as matplotlib
    computed it, in pixels of the page rendered at PDF_DPI (top-left origin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8.5, 11), dpi=72)  # 72 dpi: display pixels are PDF points
    texts = [fig.text(x / 612, y / 792, word, fontsize=size) for word, x, y, size in words]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    extents = [t.get_window_extent(renderer) for t in texts]
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(path, format="pdf")
    plt.close(fig)
    if rotate:
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(str(path))
        pdf[0].set_rotation(rotate)
        rotated = path.with_suffix(".rot.pdf")
        pdf.save(str(rotated))
        pdf.close()
        rotated.replace(path)
    return [[e.x0 * SCALE, (792 - e.y1) * SCALE, e.x1 * SCALE, (792 - e.y0) * SCALE] for e in extents]


def _image_pdf(path: Path, text: str = "INVOICE NUMBER 4711") -> None:
    page = Image.new("RGB", (850, 400), "white")
    ImageDraw.Draw(page).text((60, 150), text, fill="black", font=ImageFont.load_default(size=48))
    page.save(path, resolution=100)


def test_words_and_boxes_come_back_where_matplotlib_drew_them(tmp_path):
    pdf = tmp_path / "letter.pdf"
    layout = _matplotlib_pdf(pdf)
    (page,) = read_pdf(pdf, PDF_DPI)
    layer = page.layer
    assert page.image.size == (round(612 * SCALE), round(792 * SCALE))
    assert layer.words == [w[0] for w in WORDS]
    assert layer.lines == LINES
    assert layer.usable and layer.bad_chars == 0
    for box, want, (_, _, _, size) in zip(layer.boxes, layout, WORDS):
        # The ink box lies inside matplotlib's layout box (ascent to descent, side bearings) ...
        tol = 0.15 * size * SCALE
        assert want[0] - tol <= box[0] < box[2] <= want[2] + tol
        assert want[1] - tol <= box[1] < box[3] <= want[3] + tol
        # ... and spans most of its width and at least the cap height of the font.
        assert box[2] - box[0] >= 0.8 * (want[2] - want[0])
        assert box[3] - box[1] >= 0.6 * size * SCALE


def _ink_outside(image: Image.Image, boxes: list[list[float]], margin: int = 3) -> float:
    """Fraction of the page's dark pixels that lie outside every (margin-grown) box."""
    dark = np.asarray(image.convert("L")) < 128
    inside = np.zeros_like(dark)
    for x0, y0, x1, y1 in boxes:
        inside[max(0, int(y0) - margin):int(y1) + margin + 1, max(0, int(x0) - margin):int(x1) + margin + 1] = True
    return float((dark & ~inside).sum() / max(1, dark.sum()))


@pytest.mark.parametrize("rotate", [0, 90])
def test_boxes_cover_the_ink_of_the_rendered_page(tmp_path, rotate):
    """Independent of matplotlib: every dark pixel of the rendering is inside some word box, also on
    a page with /Rotate 90 (boxes follow the rendered, rotated page)."""
    pdf = tmp_path / "letter.pdf"
    _matplotlib_pdf(pdf, rotate=rotate)
    (page,) = read_pdf(pdf, PDF_DPI)
    if rotate:
        assert page.image.size == (round(792 * SCALE), round(612 * SCALE))
    assert page.layer.words == [w[0] for w in WORDS]
    assert _ink_outside(page.image, page.layer.boxes) == 0.0
    # The boxes are tight: shrinking them by a few pixels leaves ink outside.
    shrunk = [[x0 + 6, y0 + 6, x1 - 6, y1 - 6] for x0, y0, x1, y1 in page.layer.boxes]
    assert _ink_outside(page.image, shrunk, margin=0) > 0.05


def test_image_only_pdf_has_no_usable_layer(tmp_path):
    pdf = tmp_path / "scan.pdf"
    _image_pdf(pdf)
    (page,) = read_pdf(pdf, PDF_DPI)
    assert page.layer.words == [] and not page.layer.usable
    assert choose_source(page.layer, "auto", "x") == "ocr"
    with pytest.raises(DataError, match="--ocr never"):
        choose_source(page.layer, "never", "x")


def _handwritten_pdf(path: Path, encoding: bytes, size: tuple[int, int] = (612, 792)) -> None:
    """One page with 'ABCDEF GHIJ' in Helvetica under the given font /Encoding, written by hand."""
    content = b"BT /F1 24 Tf 72 700 Td (ABCDEF GHIJ) Tj ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 5 0 R >> >> "
            b"/Contents 4 0 R >>" % size,
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding " + encoding + b" >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))


def test_a_text_layer_without_unicode_is_garbage_and_ocred(tmp_path):
    good, garbage = tmp_path / "good.pdf", tmp_path / "garbage.pdf"
    _handwritten_pdf(good, b"/WinAnsiEncoding")
    # Glyph names that map to no character: the layer's text cannot be trusted.
    _handwritten_pdf(garbage, b"<< /Type /Encoding /Differences [65 /g1 /g2 /g3 /g4 /g5 /g6 /g7 /g8 /g9 /g10] >>")
    layer = read_pdf(good, PDF_DPI)[0].layer
    assert layer.words == ["ABCDEF", "GHIJ"] and layer.usable
    layer = read_pdf(garbage, PDF_DPI)[0].layer
    assert (layer.chars, layer.bad_chars, layer.usable) == (10, 10, False)
    assert choose_source(layer, "auto", "x") == "ocr"
    with pytest.raises(DataError, match="10 of 10 characters without a usable Unicode"):
        choose_source(layer, "never", "x")


def test_a_huge_page_is_refused_before_rendering(tmp_path):
    """A 200 x 200 inch MediaBox would be 1600 M pixels at 200 dpi (gigabytes): one error instead."""
    pdf = tmp_path / "poster.pdf"
    _handwritten_pdf(pdf, b"/WinAnsiEncoding", size=(14400, 14400))
    with pytest.raises(DataError, match=r"poster.pdf page 1: the page is 200 x 200 inches: 1600 M pixels"):
        read_pdf(pdf, PDF_DPI)
    assert read_pdf(pdf, 10)[0].layer.words == ["ABCDEF", "GHIJ"]  # fine at a low resolution


def test_usable_rule_hand_worked():
    assert not TextLayer().usable
    assert TextLayer(words=["a"], boxes=[[0, 0, 1, 1]], lines=[0], chars=10, bad_chars=1).usable
    assert not TextLayer(words=["a"], boxes=[[0, 0, 1, 1]], lines=[0], chars=10, bad_chars=2).usable
    assert choose_source(None, "auto", "x") == "ocr"  # an image file: nothing but OCR
    assert choose_source(TextLayer(["a"], [[0, 0, 1, 1]], [0], 1, 0), "always", "x") == "ocr"


def test_line_segments_never_span_two_text_lines():
    boxes = [[0, 0, 40, 10], [45, 1, 80, 11], [85, 0, 120, 10]]
    assert line_segments(boxes)[0] == [0, 0, 0]
    assert line_segments(boxes, lines=[0, 0, 1])[0] == [0, 0, 1]


def test_predictor_reads_the_text_layer_and_ocrs_scans(funsd_run, tmp_path, monkeypatch):
    text_pdf, scan_pdf = tmp_path / "digital.pdf", tmp_path / "scan.pdf"
    _matplotlib_pdf(text_pdf)
    _image_pdf(scan_pdf)
    predictor = Predictor(funsd_run, box_level="segment")
    calls = []
    real_ocr = predictor.ocr
    monkeypatch.setattr(predictor, "ocr", lambda image: calls.append(image.size) or real_ocr(image))
    (record,) = predictor.predict_file(text_pdf)
    assert record["source"] == "text-layer" and calls == []
    assert [w["text"] for w in record["words"]] == [w[0] for w in WORDS]
    assert all(w["label"] in predictor.labels for w in record["words"])
    (scan,) = predictor.predict_file(scan_pdf)
    assert scan["source"] == "ocr" and len(calls) == 1
    assert [w["text"] for w in scan["words"]][:2] == ["INVOICE", "NUMBER"]
    # --ocr always OCRs the text page too.
    (forced,) = Predictor(funsd_run, ocr="always").predict_file(text_pdf)
    assert forced["source"] == "ocr"


def test_cli_ocr_never_on_a_scan_is_one_clear_error(funsd_run, tmp_path, capsys):
    scan_pdf, text_pdf = tmp_path / "scan.pdf", tmp_path / "digital.pdf"
    _image_pdf(scan_pdf)
    _matplotlib_pdf(text_pdf)
    assert main(["predict", str(funsd_run), str(scan_pdf), "--ocr", "never"]) == 2
    err = capsys.readouterr().err
    assert f"{scan_pdf} page 1" in err and "--ocr never" in err and "no text layer" in err
    assert "Traceback" not in err
    assert main(["predict", str(funsd_run), str(text_pdf), "--ocr", "never"]) == 0
    records = json.loads(capsys.readouterr().out)[str(text_pdf)]
    assert records[0]["source"] == "text-layer"
