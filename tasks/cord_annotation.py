"""One CORD annotation (``valid_line`` + ``meta``) -> one :class:`~aetnet.data.documents.document.Document`.

Each annotation line ``valid_line[i]`` has a ``category`` and ``words`` with a ``quad``
(``x1..x4``, ``y1..y4`` pixel corners). As in LayoutLMv3's CORD preprocessing, a word's box is
its quad's top-left ``(x1, y1)`` (clipped at 0) and bottom-right ``(x3, y3)`` corners (swapped
when inverted), labels are BIO over the line's category (first word ``B-``, the rest ``I-``), and
each ``valid_line`` is one segment whose box is the union of its words' boxes (one line = one
entity = one category). The line's ``group_id`` (all lines of one menu item: count, name and
price) is kept per word in ``meta["group_ids"]``; it is not a box.

Where the annotations come from (release folders, a flat ``json/`` folder, Hugging Face rows) is
:mod:`aetnet.tasks.cord`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from aetnet.data.documents.document import Box, Document
from aetnet.data.documents.entities import Entity, entity_words
from aetnet.data.documents.validate import expect_object, require
from aetnet.data.ocr.images import image_size as read_image_size
from aetnet.errors import DataError

#: The 30 CORD v2 categories (``group.subgroup``), in alphabetical order; this order fixes the
#: label ids (see :func:`cord_label_list`), so never reorder it.
CORD_CATEGORIES: tuple[str, ...] = (
    "menu.cnt",
    "menu.discountprice",
    "menu.etc",
    "menu.itemsubtotal",
    "menu.nm",
    "menu.num",
    "menu.price",
    "menu.sub_cnt",
    "menu.sub_etc",
    "menu.sub_nm",
    "menu.sub_price",
    "menu.sub_unitprice",
    "menu.unitprice",
    "menu.vatyn",
    "sub_total.discount_price",
    "sub_total.etc",
    "sub_total.othersvc_price",
    "sub_total.service_price",
    "sub_total.subtotal_price",
    "sub_total.tax_price",
    "total.cashprice",
    "total.changeprice",
    "total.creditcardprice",
    "total.emoneyprice",
    "total.menuqty_cnt",
    "total.menutype_cnt",
    "total.total_etc",
    "total.total_price",
    "void_menu.nm",
    "void_menu.price",
)

_CATEGORY_SET = frozenset(CORD_CATEGORIES)


def cord_label_list() -> list[str]:
    """``["O", "B-menu.cnt", "I-menu.cnt", ...]``: 61 BIO labels in :data:`CORD_CATEGORIES` order."""
    labels = ["O"]
    for category in CORD_CATEGORIES:
        labels += [f"B-{category}", f"I-{category}"]
    return labels


def _quad_box(quad: Any, source: str, where: str) -> Box:
    """The reference CORD quad -> box: top-left ``(x1, y1)`` clipped at 0 and bottom-right
    ``(x3, y3)``, each axis swapped when inverted (as LayoutLMv3's CORD script does). All eight
    corner numbers are checked."""
    quad = expect_object(quad, where, source)
    xs = [require(quad, f"x{k}", "number", where, source) for k in range(1, 5)]
    ys = [require(quad, f"y{k}", "number", where, source) for k in range(1, 5)]
    x0, y0, x1, y1 = max(0.0, float(xs[0])), max(0.0, float(ys[0])), float(xs[2]), float(ys[2])
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _page_size(gt: dict[str, Any], image_size: tuple[int, int] | None, source: str) -> tuple[int, int]:
    """``meta.image_size`` (checked when given), else the image's size. (The reference script divides
    by the image's size; the quads are drawn on the annotated size, so where the two differ it wins.)"""
    meta = require(gt, "meta", "object", "", source, optional=True, default={})
    size = require(meta, "image_size", "object", "meta", source, optional=True)
    if size is not None:
        return (require(size, "width", "integer", "meta.image_size", source),
                require(size, "height", "integer", "meta.image_size", source))
    if image_size is not None:
        return image_size
    raise DataError(
        "no meta.image_size {width, height} and no image to measure; add the size or the image",
        source,
        "meta.image_size",
    )


def cord_document(
    gt: dict[str, Any],
    doc_id: str,
    source: str,
    image_path: Path | None = None,
    image: Image.Image | None = None,
) -> Document:
    """Build one :class:`Document` from a parsed CORD annotation (``valid_line`` + ``meta``).

    Args:
        gt: the annotation dict.
        doc_id: the document id.
        source: the annotation's origin, named in errors.
        image_path: the receipt image file, if any.
        image: the receipt image, if already opened (Hugging Face rows).

    Raises:
        DataError: a line has an unknown category, a word a malformed quad, or the page has no size.
    """
    gt = expect_object(gt, "", source)
    lines = require(gt, "valid_line", "list", "", source, fix="is this a CORD annotation?")
    entities: list[Entity] = []
    groups: dict[int, int] = {}
    for i, raw in enumerate(lines):
        where = f"valid_line[{i}]"
        line = expect_object(raw, where, source)
        category = require(line, "category", "string", where, source)
        if category not in _CATEGORY_SET:
            raise DataError(
                f"unknown category {category!r}; expected one of: {', '.join(CORD_CATEGORIES)}",
                source,
                f"{where}.category",
            )
        # The menu item the line belongs to: kept in meta, not a box.
        groups[i] = require(line, "group_id", "integer", where, source, optional=True, default=-1)
        line_words = []
        for j, raw_word in enumerate(require(line, "words", "list", where, source)):
            word = expect_object(raw_word, f"{where}.words[{j}]", source)
            # The text as annotated (the reference tokenises it unstripped); blank words are dropped.
            text = require(word, "text", "text", f"{where}.words[{j}]", source)
            line_words.append((text, _quad_box(require(word, "quad", "object", f"{where}.words[{j}]", source),
                                               source, f"{where}.words[{j}].quad")))
        # One line = one entity = one segment (its box: the union of its non-empty words' boxes), as the reference.
        entities.append(Entity(i, category, line_words))
    page = entity_words(entities)

    image_size = None
    if image is not None:
        image_size = image.size
    elif image_path is not None:
        image_size = read_image_size(image_path)  # header only
    meta = gt.get("meta") or {}  # checked to be an object by _page_size
    page_size = _page_size(gt, image_size, source)
    return page.document(
        id=doc_id,
        page_size=page_size,
        image=image,
        image_path=image_path,
        source=source,
        meta={"skipped_words": page.skipped_words, "image_id": meta.get("image_id"), "cord_split": meta.get("split"),
              "group_ids": [groups[line] for line in page.segment_ids]},
    )
