"""Opening page images safely: clear errors for missing, corrupt or absurdly large files, and upright.

Phones save a portrait page as landscape pixels plus an EXIF orientation tag; browsers, Label Studio
and its ML backend show (and annotate) the upright page. Every path that opens a page image (the
training readers, ``predict``, ``serve``, OCR, ``convert labelstudio``) goes through :func:`upright`
(pixels) or :func:`upright_size` (header only), so all of them see the page as it is shown.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from aetnet.errors import DataError

#: Pages larger than this many pixels are refused (a decompression bomb, not a scan).
MAX_IMAGE_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


#: EXIF/TIFF orientation tag, and the orientations that swap width and height (transpose/rotate 90/270).
ORIENTATION_TAG = 0x0112
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def _png_chunks_after_pixels(img: PngImagePlugin.PngImageFile) -> bool | None:
    """Whether a PNG not yet decoded has chunks after its first ``IDAT`` other than more ``IDAT`` and ``IEND``
    (an ``eXIf`` or text chunk that only decoding would read), from the chunk headers alone; ``None`` when
    it cannot tell (no file, already decoded, a truncated chunk list)."""
    fp = getattr(img, "fp", None)
    if fp is None or len(img.tile) != 1:
        return None
    where = fp.tell()
    try:
        fp.seek(img.tile[0][2] - 8)  # the first IDAT chunk's header: its length, then its type
        while True:
            header = fp.read(8)
            if len(header) < 8:
                return None
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"IEND":
                return False
            if kind != b"IDAT":
                return True
            fp.seek(length + 4, 1)  # the chunk's data and CRC
    except (OSError, ValueError):
        return None
    finally:
        fp.seek(where)


def _exif(img: Image.Image) -> Image.Exif:
    """``img.getexif()``, without decoding the pixels of a PNG whose metadata all precede them.

    Pillow decodes a whole PNG to look for an ``eXIf`` chunk after the pixel data when the header has none
    (milliseconds a page, several times a page when preparing a split); when the chunk headers show no
    chunk there but pixels and the end, the header's metadata is all the decode would find."""
    if (isinstance(img, PngImagePlugin.PngImageFile) and "exif" not in img.info
            and _png_chunks_after_pixels(img) is False):
        return Image.Image.getexif(img)
    return img.getexif()


def orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1 = upright, as stored; 2-8 = mirrored and/or rotated), header only."""
    try:
        value = _exif(img).get(ORIENTATION_TAG, 1)
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
