"""Boxes: pixel -> 0-1000 normalisation with validation, and segment-level boxes.

LayoutLMv3 embeds integer coordinates on a 0-1000 grid relative to the page. Readers keep pixel
boxes; this module is the one place they are converted, so that inverted boxes, boxes far outside
the page and boxes that were already normalised are caught with a message naming the document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aetnet.data.documents.compact import BoxArray
from aetnet.data.documents.document import Document
from aetnet.errors import DataError

#: Boxes may overhang the page by this share of its size (scanner margins).
OVERHANG_TOLERANCE = 0.05
#: The largest coordinate LayoutLMv3's 2-D position tables hold (``max_2d_position_embeddings`` = 1024 rows).
#: A normalised coordinate up to it is fed as the reference computes it (a box overhanging the page gives
#: values above 1000); a box with a coordinate beyond it is clipped to the page (0-1000).
MAX_COORDINATE = 1023


def normalize_box(box: list[float], page_size: tuple[int, int], where: str = "", index: int = 0) -> list[int]:
    """Map one pixel box ``[x0, y0, x1, y1]`` onto LayoutLMv3's 0-1000 grid.

    Args:
        box: pixel coordinates on the page image.
        page_size: ``(width, height)`` in pixels.
        where: the document or file, for error messages.
        index: the word index, for error messages.

    Returns:
        Four integers: ``int(1000 * x / width)`` (truncated, as the LayoutLMv3 reference preprocessing
        does), negative values raised to 0; a box overhanging the page keeps values above 1000 up to
        :data:`MAX_COORDINATE`, and a box with a coordinate beyond that is clipped to the page (0-1000).

    Raises:
        DataError: the box is inverted or lies outside the page by more than the tolerance.
    """
    width, height = page_size
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        raise DataError(
            f"box {index} {list(box)} is inverted (x1 < x0 or y1 < y0); boxes must be [x0, y0, x1, y1]",
            where,
            "boxes",
        )
    tol_x, tol_y = width * OVERHANG_TOLERANCE, height * OVERHANG_TOLERANCE
    if x0 < -tol_x or y0 < -tol_y or x1 > width + tol_x or y1 > height + tol_y:
        raise DataError(
            f"box {index} {list(box)} lies outside the {width}x{height} page; boxes must be pixel "
            "coordinates on the page image",
            where,
            "boxes",
        )
    # Truncation, as LayoutLMv3's FUNSD/CORD scripts and its OCR processor do: int(1000 * x / width), fed
    # as is when it overhangs the page a little (the reference gives 1003 for y = 867 on an 864-pixel page).
    grid = [int(1000 * x0 / width), int(1000 * y0 / height), int(1000 * x1 / width), int(1000 * y1 / height)]
    if max(grid) > MAX_COORDINATE:  # past LayoutLMv3's position tables: clip the box to the page
        grid = [min(v, 1000) for v in grid]
    return [max(v, 0) for v in grid]  # no table row below 0 (the reference clips CORD's x1, y1 at 0)


def looks_normalized(boxes: list[list[float]], page_size: tuple[int, int]) -> bool:
    """True when boxes overflow the page but all fit on a 0-1000 grid: they were normalised already."""
    if not len(boxes):
        return False
    width, height = page_size
    rows = boxes.array if isinstance(boxes, BoxArray) else None
    if rows is not None and np.isfinite(rows).all():  # one pass over the array (the same maxima as below)
        max_x = float(max(rows[:, 0].max(), rows[:, 2].max()))
        max_y = float(max(rows[:, 1].max(), rows[:, 3].max()))
    else:
        max_x = max(max(b[0], b[2]) for b in boxes)
        max_y = max(max(b[1], b[3]) for b in boxes)
    overflow = max_x > width * (1 + OVERHANG_TOLERANCE) or max_y > height * (1 + OVERHANG_TOLERANCE)
    return overflow and max_x <= 1000 and max_y <= 1000


def _grid(rows: np.ndarray, page_size: tuple[int, int]) -> np.ndarray | None:
    """:func:`normalize_box` of every row of the ``(n, 4)`` float64 ``rows`` at once (the same float operations,
    so the same integers), or ``None`` when some box is not finite, inverted or off the page (then
    :func:`normalize_box`, box by box, raises the error naming the first one)."""
    width, height = page_size
    x0, y0, x1, y1 = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    tol_x, tol_y = width * OVERHANG_TOLERANCE, height * OVERHANG_TOLERANCE
    bad = ((x1 < x0) | (y1 < y0) | (x0 < -tol_x) | (y0 < -tol_y) | (x1 > width + tol_x) | (y1 > height + tol_y)
           | ~np.isfinite(rows).all(axis=1))
    if bad.any():
        return None
    grid = np.trunc(1000 * rows / np.array([width, height, width, height], dtype=np.float64)).astype(np.int64)
    past = grid.max(axis=1) > MAX_COORDINATE
    if past.any():
        grid[past] = np.minimum(grid[past], 1000)
    return np.maximum(grid, 0)


def document_boxes(doc: Document, box_level: str = "segment", as_array: bool = False) -> list[list[int]] | np.ndarray:
    """The 0-1000 box of every word of ``doc``.

    Args:
        doc: the document, with pixel boxes.
        box_level: ``word`` gives each word its own box; ``segment`` gives every word of an entity
            the entity's box (words outside any segment keep their own).
        as_array: give an ``(n, 4)`` int64 array instead of lists (what screening needs: no Python object a
            coordinate).

    Raises:
        DataError: a bad box, or boxes that were already normalised to 0-1000.
    """
    where = doc.source or doc.id
    if looks_normalized(doc.boxes, doc.page_size):
        raise DataError(
            f"boxes look already normalised to 0-1000 but the page is {doc.page_size[0]}x{doc.page_size[1]} "
            "pixels; give pixel boxes (aetnet normalises them itself)",
            where,
            "boxes",
        )
    boxes = doc.boxes
    if box_level == "segment" and doc.segment_ids is not None:
        boxes = [
            doc.segment_boxes.get(seg, box) if seg is not None and seg >= 0 else box
            for seg, box in zip(doc.segment_ids, doc.boxes)
        ]
    elif box_level not in ("segment", "word"):
        raise ValueError(f"box_level must be 'segment' or 'word', got {box_level!r}")
    if not len(boxes):
        return []
    rows = boxes.array if isinstance(boxes, BoxArray) else BoxArray(boxes).array
    grid = _grid(rows, doc.page_size)
    if grid is not None:
        return grid if as_array else grid.tolist()
    return [normalize_box(b, doc.page_size, where, i) for i, b in enumerate(boxes)]  # raises for the bad box


def union_box(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The smallest ``[x0, y0, x1, y1]`` box holding every box of ``boxes`` (one or more).

    Coordinates keep their type (integer boxes give an integer box).
    """
    if not boxes:
        raise ValueError("union_box needs at least one box")
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def union_boxes(boxes: Sequence[Sequence[float]], segments: Sequence[int]) -> dict[int, list[float]]:
    """The box union of each segment id's words (ids < 0 are no segment).

    Args:
        boxes: one box per word.
        segments: one segment id per word.

    Returns:
        Segment id -> :func:`union_box` of its words' boxes, in order of first appearance.
    """
    members: dict[int, list[Sequence[float]]] = {}
    for seg, box in zip(segments, boxes):
        if seg >= 0:
            members.setdefault(seg, []).append(box)
    return {seg: union_box(group) for seg, group in members.items()}


def line_segments(boxes: Sequence[Sequence[float]],
                  lines: Sequence[int] | None = None) -> tuple[list[int], dict[int, list[float]]]:
    """Group OCR words (in reading order) into line fragments, the segments of segment-level boxes.

    Training data such as FUNSD gives every word its entity's box; OCR has no entities, so a run of
    words on one line with word-sized gaps stands in for one (a wide gap, as between a form field's
    name and its value, starts a new segment).

    Args:
        boxes: pixel word boxes in reading order.
        lines: optional line number per word (a PDF text layer's lines); a segment never spans two.

    Returns:
        ``(segment_ids, segment_boxes)``: one id per word and the pixel box union of each segment.
    """
    ids: list[int] = []
    for i, box in enumerate(boxes):
        if i > 0:
            prev = boxes[i - 1]
            height = max(box[3] - box[1], prev[3] - prev[1], 1.0)
            overlap = min(box[3], prev[3]) - max(box[1], prev[1])
            gap = box[0] - prev[2]
            same = (overlap >= 0.5 * min(box[3] - box[1], prev[3] - prev[1])
                    and -0.5 * height <= gap <= 0.8 * height
                    and (lines is None or lines[i] == lines[i - 1]))
        else:
            same = False
        ids.append(ids[-1] if same else (ids[-1] + 1 if ids else 0))
    return ids, union_boxes(boxes, ids)
