"""Words and boxes from the text layer of PDF pages, so born-digital PDFs need no OCR.

PDFium's text page gives every character with its box; :func:`read_text_layer` groups them into
words (broken at whitespace, at PDFium's generated line breaks and at gaps wider than a third of the
text height) and the words into lines, and maps the boxes to the pixels of the page rendered at
``dpi`` (the same pixels OCR would read, so text-layer and OCR words feed the same windows).

A text layer is *usable* (:attr:`TextLayer.usable`) when it holds at least :data:`MIN_WORDS` words and
at most :data:`MAX_BAD_CHAR_FRACTION` of its characters are garbage (no Unicode mapping, U+FFFD,
private-use or control characters), as in PDFs whose fonts lost their ``ToUnicode`` tables. Scanned
pages have no text layer at all. ``ocr="auto"`` (see :func:`choose_source`) runs OCR only on pages
without a usable layer.

Example::

    from aetnet.data.ocr.pdftext import read_pdf
    for page in read_pdf("invoice.pdf"):
        print(page.layer.words[:5], page.layer.usable)
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from aetnet.errors import DataError

logger = logging.getLogger(__name__)

OCR_MODES = ("auto", "always", "never")
#: Fewer words than this and the page counts as having no text layer.
MIN_WORDS = 1
#: More garbage characters than this fraction and the text layer counts as unusable.
MAX_BAD_CHAR_FRACTION = 0.1
#: A horizontal gap wider than this fraction of the text height starts a new word.
WORD_GAP = 0.33


class TooManyPages(DataError):
    """A document with more pages than a limit allows (the service answers 413)."""


class PageTooLarge(DataError):
    """A page with more pixels than a page may have, found before decoding it (the service answers 413)."""


@dataclass
class TextLayer:
    """The text layer of one page.

    Attributes:
        words: the words in PDFium's reading order.
        boxes: one ``[x0, y0, x1, y1]`` pixel box per word (page rendered at the layer's ``dpi``).
        lines: one line number per word (0, 1, ...); words of one line share it.
        chars: characters seen (whitespace excluded), and ``bad_chars`` how many of them are garbage.
    """

    words: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    chars: int = 0
    bad_chars: int = 0

    @property
    def usable(self) -> bool:
        """Enough words and few enough garbage characters to be used instead of OCR."""
        return len(self.words) >= MIN_WORDS and self.bad_chars <= MAX_BAD_CHAR_FRACTION * self.chars

    def describe(self) -> str:
        """Why the layer is (not) usable, for messages."""
        if not self.words:
            return "no text layer (a scanned or image-only page)"
        return f"{len(self.words)} words, {self.bad_chars} of {self.chars} characters without a usable Unicode"


@dataclass
class PdfPage:
    """One page of a PDF: its rendering and its text layer (``None`` when not read)."""

    image: Image.Image
    layer: TextLayer | None


def _is_bad(code: int) -> bool:
    return code in (0, 0xFFFD) or 0xE000 <= code <= 0xF8FF or (code < 32 and chr(code) not in "\t\r\n")


def _char_boxes(textpage) -> Iterator[tuple[int, str, tuple[float, float, float, float] | None, bool]]:
    """Per character: index, text, tight box ``(left, bottom, right, top)`` in PDF points (``None``
    for whitespace and generated characters) and whether PDFium found no Unicode for it."""
    import pypdfium2.raw as pdfium_c

    raw = textpage.raw
    left, right, bottom, top = (ctypes.c_double() for _ in range(4))
    for i in range(textpage.count_chars()):
        code = pdfium_c.FPDFText_GetUnicode(raw, i)
        text = chr(code) if code < 0x110000 else "\ufffd"
        if text.isspace() or pdfium_c.FPDFText_IsGenerated(raw, i) == 1:
            yield i, text, None, False
            continue
        pdfium_c.FPDFText_GetCharBox(raw, i, left, right, bottom, top)
        bad = _is_bad(code) or pdfium_c.FPDFText_HasUnicodeMapError(raw, i) == 1
        yield i, text, (left.value, bottom.value, right.value, top.value), bad


def _group_words(textpage) -> tuple[list[tuple[str, list[float], int]], int, int]:
    """Words as ``(text, [left, bottom, right, top] in points, line)``, plus char and bad-char counts."""
    words: list[tuple[str, list[float], int]] = []
    chars = bad = line = 0
    text, box, prev = "", None, None  # the word being read, its box, the previous visible char's box
    newline = False
    for _, char, cbox, is_bad in _char_boxes(textpage):
        if cbox is None:
            if text:
                words.append((text, box, line))
                text, box = "", None
            newline = newline or char in "\r\n"
            continue
        chars += 1
        bad += is_bad
        if prev is not None:
            height = max(prev[3] - prev[1], cbox[3] - cbox[1], 1e-3)
            same_line = min(prev[3], cbox[3]) - max(prev[1], cbox[1]) > -0.1 * height
            newline = newline or not same_line
            if text and (newline or cbox[0] - prev[2] > WORD_GAP * height or cbox[2] < prev[0]):
                words.append((text, box, line))
                text, box = "", None
        if newline and words and not text:
            line += 1
        newline = False
        text += char
        box = list(cbox) if box is None else [min(box[0], cbox[0]), min(box[1], cbox[1]),
                                               max(box[2], cbox[2]), max(box[3], cbox[3])]
        prev = cbox
    if text:
        words.append((text, box, line))
    return words, chars, bad


def read_text_layer(page, size: tuple[int, int]) -> TextLayer:
    """The text layer of a pypdfium2 page, boxes in pixels of the page rendered at ``size``.

    Args:
        page: a ``pypdfium2.PdfPage``.
        size: ``(width, height)`` of the rendered page image (rotation and crop box included).
    """
    import pypdfium2.raw as pdfium_c

    textpage = page.get_textpage()
    try:
        words, chars, bad = _group_words(textpage)
    finally:
        textpage.close()
    width, height = size
    dev_x, dev_y = ctypes.c_int(), ctypes.c_int()

    def to_pixels(x: float, y: float) -> tuple[int, int]:
        pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, width, height, 0, x, y, dev_x, dev_y)
        return dev_x.value, dev_y.value

    layer = TextLayer(chars=chars, bad_chars=bad)
    for text, (left, bottom, right, top), line in words:
        (ax, ay), (bx, by) = to_pixels(left, bottom), to_pixels(right, top)
        box = [float(min(ax, bx)), float(min(ay, by)), float(max(ax, bx)), float(max(ay, by))]
        box = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
               min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
        layer.words.append(text)
        layer.boxes.append(box)
        layer.lines.append(line)
    return layer


def read_pdf(source: str | Path | bytes, dpi: int, text: bool = True, name: str | None = None,
             max_pages: int | None = None) -> list[PdfPage]:
    """Every page of a PDF rendered at ``dpi``, with its text layer when ``text``.

    Args:
        source: a PDF file, or its bytes (an upload; nothing is written to disk).
        dpi: rendering resolution.
        text: read each page's text layer.
        name: how errors name the document (default: the path).
        max_pages: refuse documents with more pages (before rendering any).

    Raises:
        DataError: the file cannot be opened as a PDF, has no page or a page cannot be rendered;
            :class:`TooManyPages` past ``max_pages``.
    """
    return list(iter_pdf(source, dpi, text, name, max_pages))


def iter_pdf(source: str | Path | bytes, dpi: int, text: bool = True, name: str | None = None,
             max_pages: int | None = None, only: int | None = None) -> Iterator[PdfPage]:
    """:func:`read_pdf` one page at a time: a page is rendered when the caller asks for it, so a long
    PDF never sits in memory as pixels (the same errors, raised when reached). ``only``: just that
    page (0-based), e.g. for an OCR worker."""
    import pypdfium2 as pdfium

    path = name or (Path(source) if not isinstance(source, bytes) else "upload")
    try:
        pdf = pdfium.PdfDocument(source if isinstance(source, bytes) else str(source))
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == 0:  # FPDF_ERR_SUCCESS: PDFium refuses an empty page tree so
            raise DataError("PDF has no pages; give a PDF with at least one page", path) from None
        raise DataError(f"cannot be opened as a PDF ({exc}); it is corrupt, encrypted or not a PDF: "
                        "re-export it", path) from None
    try:
        if len(pdf) == 0:
            raise DataError("PDF has no pages; give a PDF with at least one page", path)
        if max_pages is not None and len(pdf) > max_pages:
            raise TooManyPages(f"{len(pdf)} pages, more than the limit of {max_pages}; split the PDF", path)
        for i in range(len(pdf)) if only is None else [only]:
            try:
                page = pdf[i]
                _check_size(page, dpi, f"{path} page {i + 1}")
                image = render_page(page, dpi)
                result = PdfPage(image, read_text_layer(page, image.size) if text else None)
                page.close()
            except pdfium.PdfiumError as exc:
                raise DataError(f"a page cannot be rendered or read ({exc}); re-export the PDF", path) from None
            yield result
    finally:
        pdf.close()


def render_page(page, dpi: int) -> Image.Image:
    """A pypdfium2 page rendered at ``dpi`` as an RGB image (the one place PDF pages become pixels)."""
    return page.render(scale=dpi / 72).to_pil().convert("RGB")


def page_count(source: str | Path) -> int:
    """The number of pages of a PDF file (0 when it cannot be opened: reading it reports why)."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(source))
    except pdfium.PdfiumError:
        return 0
    try:
        return len(pdf)
    finally:
        pdf.close()


def _check_size(page, dpi: int, where: str) -> None:
    """Refuse a page whose rendering would exceed PIL's decompression-bomb limit (a huge MediaBox
    would otherwise take gigabytes of memory)."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = page.get_size()
    pixels = width * height * (dpi / 72) ** 2
    if limit and pixels > limit:
        raise PageTooLarge(f"the page is {width / 72:.0f} x {height / 72:.0f} inches: {pixels / 1e6:.0f} M pixels "
                        f"at {dpi} dpi, more than the {limit / 1e6:.0f} M a page may have; re-export it at "
                        "a page size", where)


def choose_source(layer: TextLayer | None, mode: str, where: str) -> str:
    """``"text-layer"`` or ``"ocr"`` for a page, by ``mode`` (see :data:`OCR_MODES`).

    Args:
        layer: the page's text layer; ``None`` for an image file (no text layer exists).
        mode: ``auto`` (text layer when usable, else OCR), ``always`` (OCR) or ``never`` (text layer).
        where: the file and page, for the error message.

    Raises:
        DataError: ``mode`` is ``never`` and the page has no usable text layer.
    """
    if mode not in OCR_MODES:
        raise DataError(f"--ocr {mode} is not a mode; use {', '.join(OCR_MODES)}")
    if mode == "always":
        return "ocr"
    if layer is not None and layer.usable:
        return "text-layer"
    if mode == "never":
        what = "is an image, not a PDF with a text layer" if layer is None else f"has {layer.describe()}"
        raise DataError(f"--ocr never, but the page {what}; use --ocr auto to OCR such pages", where)
    return "ocr"
