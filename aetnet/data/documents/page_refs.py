"""Lazy references to page images stored inside a ``save_to_disk`` dataset.

A benchmark split holds hundreds of thousands of pages; a document must not keep its decoded pixels
(about 0.75 MB a page) for the whole run. :class:`DatasetRow` names a row of an Arrow dataset on
disk (memory-mapped, so naming it costs nothing): the page's encoded bytes are read when they are
needed (the OCR cache key, a cache miss, a DataLoader worker building a batch) and decoded only then.
It pickles as four small fields, so it travels cheaply to OCR pool and DataLoader worker processes,
each of which opens the dataset once.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from aetnet.errors import DataError


@functools.lru_cache(maxsize=8)
def _open_split(path: str, split: str | None, column: str):
    """The split at ``path`` (one per process), with ``column`` left undecoded."""
    import datasets

    loaded = datasets.load_from_disk(path)
    table = loaded if split is None else loaded[split]
    return table.cast_column(column, datasets.Image(decode=False))


@dataclass(frozen=True)
class DatasetRow:
    """One page image of a ``save_to_disk`` dataset, read on demand.

    Attributes:
        path: the ``save_to_disk`` folder.
        split: the split name of a ``DatasetDict``, ``None`` for a single ``Dataset``.
        row: the row index.
        column: the image column.
    """

    path: str
    split: str | None
    row: int
    column: str = "image"

    def __str__(self) -> str:
        return f"{self.path}[{self.split}][{self.row}]" if self.split is not None else f"{self.path}[{self.row}]"

    def read(self) -> bytes | Path:
        """The page's encoded bytes, or the file the row points to when it stores a path only.

        Raises:
            DataError: the row has no image.
        """
        stored = _open_split(self.path, self.split, self.column)[self.row][self.column] or {}
        if stored.get("bytes"):
            return stored["bytes"]
        if stored.get("path"):
            return Path(stored["path"])
        raise DataError("row has no image; remove the row or add its image", str(self), self.column)

    def size(self) -> tuple[int, int]:
        """``(width, height)`` from the image header (no pixel decoding)."""
        from aetnet.data.ocr.images import upright_size

        with self._open() as img:
            return upright_size(img)

    def load(self) -> Image.Image:
        """The page decoded as an RGB image.

        Raises:
            DataError: the row has no image, or its bytes are not a decodable image.
        """
        with self._open() as img:
            try:
                img.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"image cannot be decoded ({exc}); the stored bytes are corrupt or truncated: "
                                "replace or remove the row", str(self), self.column) from None
            from aetnet.data.ocr.images import upright

            return upright(img).convert("RGB")

    def _open(self) -> Image.Image:
        data = self.read()
        try:
            return Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        except Image.DecompressionBombError as exc:
            raise DataError(f"image is too large to be a page ({exc}); downscale it", str(self), self.column) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"image cannot be read ({exc}); replace or remove the row", str(self),
                            self.column) from None
