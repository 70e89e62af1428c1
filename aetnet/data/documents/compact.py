"""Compact per-word containers for :class:`~aetnet.data.documents.document.Document`.

A dataset is read into one ``Document`` per page and the documents live for the whole run. As Python
lists, a word's pixel box costs about 190 bytes (a list and four float objects) and a segment's box as
much again; RVL-CDIP pages carry hundreds of OCR words. :class:`BoxArray` keeps the boxes of a page in
one ``float64`` array (32 bytes a box, the same numbers) and :class:`SegmentBoxes` does the same for the
box of each segment id, while both still read like the lists and dicts they replace: indexing gives a
``[x0, y0, x1, y1]`` list of floats, iteration gives those lists, ``==`` compares with lists and dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np


def _as_rows(boxes: Any) -> np.ndarray:
    """``(n, 4)`` float64 copy of ``boxes`` (an array, a BoxArray or a sequence of 4-number boxes)."""
    if isinstance(boxes, BoxArray):
        return boxes.array
    rows = np.array(boxes if len(boxes) else np.empty((0, 4)), dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise ValueError(f"boxes must be an (n, 4) array of [x0, y0, x1, y1], got shape {rows.shape}")
    return rows


class BoxArray(Sequence):
    """The pixel boxes of a page: an ``(n, 4)`` float64 array that reads as a list of ``[x0, y0, x1, y1]``.

    Args:
        boxes: ``n`` boxes of four numbers each (lists, tuples or an ``(n, 4)`` array).

    Raises:
        ValueError: a box without exactly four numbers (the Document names the box and the file).
    """

    __slots__ = ("_rows",)

    def __init__(self, boxes: Any = ()) -> None:
        self._rows = _as_rows(boxes)
        self._rows.flags.writeable = False

    @property
    def array(self) -> np.ndarray:
        """The boxes as a read-only ``(n, 4)`` float64 array."""
        return self._rows

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        # NumPy's protocol: ``copy=True`` (``np.array(boxes)``) asks for an array of the caller's own, as a
        # list of boxes gave; the read-only rows themselves only when no copy is asked for.
        rows = self._rows if dtype is None else self._rows.astype(dtype, copy=False)
        if copy is False and rows is not self._rows:
            raise ValueError(f"BoxArray holds float64 boxes: converting them to {np.dtype(dtype)} needs a copy")
        return rows.copy() if copy and rows is self._rows else rows

    def __len__(self) -> int:
        return self._rows.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return BoxArray(self._rows[index])
        return self._rows[index].tolist()

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self._rows.tolist())

    def tolist(self) -> list[list[float]]:
        """The boxes as lists of floats (for JSON)."""
        return self._rows.tolist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BoxArray):
            return np.array_equal(self._rows, other._rows)
        if isinstance(other, Sequence) and not isinstance(other, str):
            try:
                return self.tolist() == [list(b) for b in other]
            except TypeError:  # not a sequence of boxes (a flat list of numbers): not equal, as for a list
                return False
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable-looking container, like the list it replaces)

    def __repr__(self) -> str:
        return f"BoxArray({self.tolist()!r})"

    def __reduce__(self):
        return (BoxArray, (self._rows,))


class SegmentBoxes(Mapping):
    """The pixel box of each segment id, read like the ``{segment id: [x0, y0, x1, y1]}`` dict it replaces.

    Args:
        boxes: a mapping (or ``(id, box)`` pairs) of integer segment ids to four-number boxes.
    """

    __slots__ = ("_ids", "_boxes")

    def __init__(self, boxes: Mapping[int, Sequence[float]] | Iterable[tuple[int, Sequence[float]]] = ()) -> None:
        pairs = sorted((int(k), v) for k, v in (boxes.items() if isinstance(boxes, Mapping) else boxes))
        self._ids = np.array([k for k, _ in pairs], dtype=np.int64)
        self._boxes = BoxArray([list(v) for _, v in pairs])

    def _position(self, key: Any) -> int:
        if not isinstance(key, (int, np.integer)):  # as a dict: "2" is not the segment 2
            return -1
        k = int(key)
        i = int(np.searchsorted(self._ids, k))
        return i if i < len(self._ids) and self._ids[i] == k else -1

    def __getitem__(self, key: Any) -> list[float]:
        i = self._position(key)
        if i < 0:
            raise KeyError(key)
        return self._boxes[i]

    def __contains__(self, key: object) -> bool:
        return self._position(key) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids.tolist())

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"SegmentBoxes({dict(self)!r})"

    def __reduce__(self):
        return (SegmentBoxes, (dict(self),))
