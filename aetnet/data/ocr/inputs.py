"""Input files of ``aetnet predict`` and ``aetnet serve``: PNG, JPEG, TIFF (every frame) and PDF (every page,
rendered with pypdfium2, with its text layer) files as pages, and the files named by a list of paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from PIL import Image, ImageSequence, UnidentifiedImageError

from aetnet.data.ocr.images import MAX_IMAGE_PIXELS, too_large, undecodable, upright
from aetnet.data.ocr.pdftext import PdfPage, TooManyPages, iter_pdf, read_pdf
from aetnet.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + (".pdf",)
#: PDF pages are rendered at this resolution: enough for Tesseract on ordinary print.
PDF_DPI = 200


def load_pages(path: str | Path, dpi: int = PDF_DPI) -> list[Image.Image]:
    """Every page of an image or PDF file as an RGB image.

    Args:
        path: a PNG, JPEG, TIFF (every frame) or PDF (every page, rendered with pypdfium2) file.
        dpi: rendering resolution of PDF pages.

    Raises:
        DataError: the file is missing, of another type, corrupt, or holds no page.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file does not exist; check the path", path)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return _pdf_pages(path, dpi)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"unsupported file type '{suffix}'; give {', '.join(SUPPORTED_SUFFIXES)} files", path)
    return image_pages(path, path)


def image_pages(source: str | Path | IO[bytes], name: str | Path,
                max_pages: int | None = None) -> list[Image.Image]:
    """Every frame of an image (a path or an open binary file, e.g. an upload) as an RGB image.

    Raises:
        DataError: the image is corrupt or too large (named ``name``); :class:`TooManyPages` when it
            has more than ``max_pages`` frames.
    """
    try:
        with Image.open(source) as img:
            frames = getattr(img, "n_frames", 1)
            if max_pages is not None and frames > max_pages:
                raise TooManyPages(f"{frames} pages, more than the limit of {max_pages}; split the file", name)
            pages = []
            for frame in ImageSequence.Iterator(img):
                # from the header, before decoding: PIL only warns below twice the limit
                if frame.width * frame.height > MAX_IMAGE_PIXELS:
                    raise too_large(name, ValueError(f"{frame.width}x{frame.height}"))
                # upright: the page as shown (EXIF orientation), as in training
                pages.append(upright(frame).convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise too_large(name, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise undecodable(name, exc) from None
    return pages


def _pdf_pages(path: Path, dpi: int) -> list[Image.Image]:
    return [page.image for page in read_pdf(path, dpi, text=False)]


def load_document(path: str | Path, text_layer: bool = True, dpi: int = PDF_DPI) -> list[PdfPage]:
    """Every page of a file as a :class:`~aetnet.data.ocr.pdftext.PdfPage`: PDF pages with their text layer
    (when ``text_layer``), image pages with none. Raises :class:`DataError` as :func:`load_pages`."""
    return list(iter_document(path, text_layer, dpi))


def iter_document(path: str | Path, text_layer: bool = True, dpi: int = PDF_DPI) -> Iterator[PdfPage]:
    """:func:`load_document` one page at a time: PDF pages are rendered as they are asked for."""
    path = Path(path)
    if path.suffix.lower() == ".pdf" and path.is_file():
        yield from iter_pdf(path, dpi, text=text_layer)
        return
    for image in load_pages(path, dpi):
        yield PdfPage(image, None)


def collect_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files to predict on: files as given, folders expanded (recursively) to their supported files.

    Raises:
        DataError: a path does not exist or a folder holds no supported file.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise DataError(f"folder holds no {', '.join(SUPPORTED_SUFFIXES)} file", path)
            files.extend(found)
        elif path.is_file():  # as given: an image, a PDF or an aetnet pages .jsonl
            files.append(path)
        else:
            raise DataError("file or folder does not exist; check the path", path)
    return files
