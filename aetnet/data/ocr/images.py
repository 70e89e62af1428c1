"""Opening page images safely: clear errors for missing, corrupt or absurdly large files, and upright.

Phones save a portrait page as landscape pixels plus an EXIF orientation tag; browsers, Label Studio
and its ML backend show (and annotate) the upright page. Every path that opens a page image (the
training readers, ``predict``, ``serve``, OCR, ``convert labelstudio``) goes through :func:`upright`
(pixels) or :func:`upright_size` (header only), so all of them see the page as it is shown.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from aetnet.errors import DataError

#: Pages larger than this many pixels are refused (a decompression bomb, not a scan).
MAX_IMAGE_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


#: EXIF/TIFF orientation tag, and the orientations that swap width and height (transpose/rotate 90/270).
ORIENTATION_TAG = 0x0112
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def _png_without_exif(img: Image.Image) -> bool:
    """True for an opened, not yet decoded PNG whose chunks hold no ``eXIf``, read from the chunk headers.

    PIL finds an ``eXIf`` chunk placed after the pixel data only by decoding the whole image, which
    ``getexif`` does for every PNG without one before it: 8 ms for a scanned page, at each listing of a
    split. Walking the chunk headers (length and type, then a seek over the data) answers without decoding.
    """
    if img.format != "PNG" or "exif" in img.info or img.fp is None:
        return False
    fp = img.fp
    position = fp.tell()
    try:
        fp.seek(8)  # the PNG signature
        while True:
            head = fp.read(8)
            if len(head) < 8:
                return True  # truncated: no eXIf was found (decoding reports the damage)
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                return False
            if kind == b"IEND":
                return True
            fp.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    finally:
        fp.seek(position)


def orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1 = upright, as stored; 2-8 = mirrored and/or rotated), header only."""
    if _png_without_exif(img):
        return 1
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError, TypeError):  # a broken EXIF block: show the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """The page as it is shown: ``img`` turned by its EXIF orientation (``ImageOps.exif_transpose``), or
    ``img`` itself when it has none. The result carries no orientation, so this is idempotent."""
    if orientation(img) == 1:
        return img
    return ImageOps.exif_transpose(img)


def upright_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the upright page, from the header (no decoding)."""
    width, height = img.size
    return (height, width) if orientation(img) in SWAPPING_ORIENTATIONS else (width, height)


def too_large(name: str | Path, exc: Exception) -> DataError:
    """The error for an image over :data:`MAX_IMAGE_PIXELS` (``name``: the file or upload)."""
    return DataError(
        f"image is too large to be a page ({exc}); downscale it below {MAX_IMAGE_PIXELS:,} pixels", name, "image"
    )


def undecodable(name: str | Path, exc: Exception) -> DataError:
    """The error for an image that cannot be decoded (``name``: the file or upload)."""
    return DataError(
        f"image cannot be decoded ({exc}); the file is corrupt, truncated or not an image: re-export or remove it",
        name,
        "image",
    )


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file's upright page (:func:`upright_size`), from its header.

    Raises:
        DataError: the file is missing, not an image, or larger than :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("image file does not exist; check the path or the dataset layout", path, "image")
    try:
        with Image.open(path) as img:
            width, height = upright_size(img)
    except Image.DecompressionBombError as exc:
        raise too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"image cannot be read ({exc}); replace or remove it", path, "image") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise too_large(path, ValueError(f"{width}x{height}"))
    return width, height


def open_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB image, fully decoded and :func:`upright`.

    Raises:
        DataError: the file is missing, not an image, truncated, or larger than
            :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("image file does not exist; check the path or the dataset layout", path, "image")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:  # from the header: PIL only warns below twice the limit
                raise too_large(path, ValueError(f"{img.width}x{img.height}"))
            img.load()
            return upright(img).convert("RGB")
    except Image.DecompressionBombError as exc:
        raise too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise undecodable(path, exc) from None
