"""Page targets -> BIO word labels and segments (the conversions of :mod:`aetnet.data.documents.pages`).

- plain label names (one per word) become BIO over consecutive words of one segment;
- ``entities`` with word indices give their words B/I tags, the entity index being the segment;
- on OCR pages, ``entities`` with ``box`` regions label the OCR words they cover at least half.
"""

from __future__ import annotations

import logging
from typing import Any

from aetnet.data.documents.entities import entity_tags
from aetnet.data.documents.validate import at, expect_box, expect_integer, expect_list, expect_object, require
from aetnet.errors import DataError

logger = logging.getLogger(__name__)

#: Share of an OCR word's area a labelled region must cover for the word to take its label.
REGION_COVER = 0.5


def require_that(cond: bool, where: str, field: str, message: str) -> None:
    """Raise a :class:`DataError` naming ``where`` (``file:line``) and ``field`` unless ``cond``."""
    if not cond:
        raise DataError(message, where, field)


def check_box(box: Any, where: str, field: str, size: tuple[int, int] | None) -> list[float]:
    # Presence and types through the readers' shared checks (aetnet.data.documents.validate); then the geometry.
    box = expect_box(box, field, where, fix="give four pixel numbers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    require_that(x0 <= x1 and y0 <= y1, where, field, f"box {box} is inverted; give [x0, y0, x1, y1] with x0 <= x1, "
             "y0 <= y1")
    if size is not None:
        w, h = size
        require_that(x0 >= -1 and y0 >= -1 and x1 <= w + 1 and y1 <= h + 1, where, field,
                 f"box {box} lies outside the {w}x{h} page; boxes are pixels on the page image")
    return box


def _check_index_list(value: Any, n: int, where: str, field: str) -> list[int]:
    fix = "give a list of word indices"
    value = [expect_integer(i, at(field, k), where, fix) for k, i in enumerate(expect_list(value, field, where, fix))]
    bad = [i for i in value if not 0 <= i < n]
    require_that(not bad, where, field, f"word index {bad[0] if bad else ''} is out of range for a page of {n} words")
    return value


def is_bio(labels: list[str]) -> bool:
    """True when every label is ``O`` or ``B-X``/``I-X`` (the labels are BIO tags already)."""
    return all(label == "O" or label[:2] in ("B-", "I-") for label in labels)


def plain_to_bio(labels: list[str], segments: list[int] | None) -> list[str]:
    """Plain names -> BIO: a run of one name over consecutive words of one segment is one entity."""
    out: list[str] = []
    for i, label in enumerate(labels):
        if label == "O":
            out.append("O")
            continue
        same = (i > 0 and labels[i - 1] == label
                and (segments is None or segments[i] == segments[i - 1]))
        out.append(f"{'I' if same else 'B'}-{label}")
    return out


def entity_segments(labels: list[str]) -> list[int]:
    """One segment id per word from BIO tags: each entity is a segment, an ``O`` word is its own."""
    ids, current = [], -1
    for i, label in enumerate(labels):
        if label == "O" or label.startswith("B-") or i == 0 or labels[i - 1] == "O" \
                or labels[i - 1][2:] != label[2:]:
            current += 1
        ids.append(current)
    return ids


def entities_to_labels(entities: Any, n: int, where: str) -> tuple[list[str], list[int]]:
    """``entities`` with word indices -> BIO labels and segment ids (entity index; -1 outside)."""
    fix = 'give entities as [{"label": "<name>", "words": [word indices]}]'
    labels, segments = ["O"] * n, [-1] * n
    for k, raw in enumerate(expect_list(entities, "entities", where, fix)):
        field = at("entities", k)
        ent = expect_object(raw, field, where, fix)
        require(ent, "label", "string", field, where, fix=fix)
        require_that(ent["label"].strip() != "", where, f"{field}.label", "is empty; give the entity's label name")
        idx = sorted(_check_index_list(ent.get("words"), n, where, f"{field}.words"))
        require_that(bool(idx), where, f"{field}.words", "is empty; an entity needs at least one word")
        for i, tag in zip(idx, entity_tags(ent["label"], len(idx))):
            require_that(segments[i] == -1, where, f"{field}.words", f"word {i} already belongs to entity "
                     f"{segments[i]}; a word belongs to one entity at most")
            labels[i] = tag
            segments[i] = k
    return labels, segments


def regions_to_labels(entities: Any, boxes: list[list[float]], where: str,
                       size: tuple[int, int]) -> tuple[list[str], list[int]]:
    """``entities`` with ``box`` regions on an OCR page -> BIO labels of the OCR words they cover."""
    fix = 'on a page without words give entities as [{"label": "<name>", "box": [x0, y0, x1, y1]}]'
    regions = []
    for k, raw in enumerate(expect_list(entities, "entities", where, fix)):
        field = at("entities", k)
        ent = expect_object(raw, field, where, fix)
        require(ent, "label", "string", field, where, fix=fix)
        require(ent, "box", "box", field, where, fix=fix)
        regions.append((ent["label"], check_box(ent["box"], where, f"{field}.box", size)))
    owner = [region_of(box, [r for _, r in regions]) for box in boxes]
    labels, segments = [], []
    for i, k in enumerate(owner):
        if k < 0:
            labels.append("O")
        else:
            labels.append(f"{'I' if i > 0 and owner[i - 1] == k else 'B'}-{regions[k][0]}")
        segments.append(k)
    unmatched = [regions[k][0] for k in range(len(regions)) if k not in owner]
    if unmatched:
        logger.warning("%s: %d labelled region(s) cover no OCR word (%s); they give no training signal",
                       where, len(unmatched), ", ".join(unmatched[:5]))
    return labels, segments


def region_of(box: list[float], regions: list[list[float]]) -> int:
    """The region covering most of ``box`` (at least :data:`REGION_COVER` of its area), else -1."""
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    best, best_share = -1, REGION_COVER
    for k, r in enumerate(regions):
        iw = min(box[2], r[2]) - max(box[0], r[0])
        ih = min(box[3], r[3]) - max(box[1], r[1])
        share = max(iw, 0.0) * max(ih, 0.0) / area
        if share >= best_share:
            best, best_share = k, share
    return best
