"""Opening page images safely: clear errors for missing, corrupt or absurdly large files."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from aetnet.errors import DataError

#: Pages larger than this many pixels are refused (a decompression bomb, not a scan).
MAX_IMAGE_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


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
    """``(width, height)`` of an image file from its header (no decoding).

    Raises:
        DataError: the file is missing, not an image, or larger than :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("image file does not exist; check the path or the dataset layout", path, "image")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"image cannot be read ({exc}); replace or remove it", path, "image") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise too_large(path, ValueError(f"{width}x{height}"))
    return width, height


def open_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an RGB image, fully decoded.

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
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise undecodable(path, exc) from None
