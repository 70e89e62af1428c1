"""The one document type every task reads into.

A :class:`Document` is a page: its words, their pixel boxes and whatever supervision the task has
(word labels for token tasks, a class for classification, questions for QA live in
:class:`QAExample`). Validation happens on construction so that a bad annotation fails where it is
read, naming its file, instead of deep inside a batch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aetnet.data.documents.compact import BoxArray, SegmentBoxes
from aetnet.errors import DataError

Box = list[float]


@dataclass
class Document:
    """One page with its words and annotations.

    Attributes:
        id: unique id within its split (file stem, questionId, ...).
        words: the page's words in reading order.
        boxes: one pixel box ``[x0, y0, x1, y1]`` per word on the page image (kept as a
            :class:`~aetnet.data.documents.compact.BoxArray`: one float64 array that reads as a list of boxes).
        page_size: ``(width, height)`` of the page in pixels.
        image: the page image, when already loaded.
        image_path: where to load the page image from; ``None`` with ``image=None`` and
            ``image_ref=None`` means a blank page of ``page_size`` (text and layout only).
        image_ref: a lazy reference with ``load() -> PIL.Image`` (a
            :class:`~aetnet.data.documents.page_refs.DatasetRow`): pixels stay on disk until a batch needs them.
        labels: one label string per word (``"B-QUESTION"``, ``"O"``, ...), for token tasks.
        segment_ids: one entity/segment id per word (-1 for none), for segment-level boxes.
        segment_boxes: pixel box of each segment id (kept as a :class:`~aetnet.data.documents.compact.SegmentBoxes`).
        links: pairs of linked segment ids (FUNSD ``linking``).
        doc_label: the document class, for classification.
        source: the annotation file, used in error messages.
        meta: anything else a task needs to keep (raw entity texts, OCR settings, ...).
    """

    id: str
    words: list[str]
    boxes: list[Box]
    page_size: tuple[int, int]
    image: Image.Image | None = None
    image_path: str | Path | None = None
    image_ref: Any = None
    labels: list[str] | None = None
    segment_ids: list[int] | None = None
    segment_boxes: dict[int, Box] = field(default_factory=dict)
    links: list[tuple[int, int]] = field(default_factory=list)
    doc_label: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.source or self.id
        self.words = [str(w) for w in self.words]
        if len(self.boxes) != len(self.words):
            raise DataError(
                f"{len(self.words)} words but {len(self.boxes)} boxes in document '{self.id}'; "
                "give exactly one box per word",
                where,
                "boxes",
            )
        if self.labels is not None and len(self.labels) != len(self.words):
            raise DataError(
                f"{len(self.words)} words but {len(self.labels)} labels in document '{self.id}'; "
                "give exactly one label per word",
                where,
                "labels",
            )
        if self.segment_ids is not None and len(self.segment_ids) != len(self.words):
            raise DataError(
                f"{len(self.words)} words but {len(self.segment_ids)} segment ids in document "
                f"'{self.id}'; give one segment id per word (-1 for none)",
                where,
                "segment_ids",
            )
        try:
            width, height = (int(v) for v in self.page_size)
        except (TypeError, ValueError):
            raise DataError(
                f"page size {self.page_size!r} is not (width, height)", where, "page_size"
            ) from None
        if width <= 0 or height <= 0:
            raise DataError(
                f"page size {width}x{height} must be positive; give the image's pixel size",
                where,
                "page_size",
            )
        self.page_size = (width, height)
        self.boxes = self._compact_boxes(where)
        # One shared string object per label name (a page repeats a handful of names).
        if self.labels is not None:
            self.labels = [sys.intern(str(label)) for label in self.labels]
        if not isinstance(self.segment_boxes, SegmentBoxes):
            try:
                self.segment_boxes = SegmentBoxes(self.segment_boxes)
            except (TypeError, ValueError) as exc:
                raise DataError(f"segment boxes of document '{self.id}' must map integer segment ids to "
                                f"[x0, y0, x1, y1] ({exc})", where, "segment_boxes") from None

    def _compact_boxes(self, where: str) -> BoxArray:
        """The boxes as one float64 array (:class:`BoxArray`), each checked to have four numbers."""
        if isinstance(self.boxes, BoxArray):
            return self.boxes
        try:  # the common case in one conversion: n boxes of four numbers, none missing
            rows = np.array(self.boxes, dtype=np.float64)
        except (TypeError, ValueError):
            rows = None
        if rows is not None and rows.ndim == 2 and rows.shape[1] == 4 and not np.isnan(rows).any():
            return BoxArray(rows)
        for i, box in enumerate(self.boxes):
            if len(box) != 4:
                raise DataError(
                    f"box {i} of document '{self.id}' has {len(box)} numbers, expected [x0, y0, x1, y1]",
                    where,
                    "boxes",
                )
        return BoxArray([[float(v) for v in box] for box in self.boxes])

    def __len__(self) -> int:
        return len(self.words)

    def load_image(self) -> Image.Image:
        """The page as an RGB image: the loaded image, the file, the dataset row, or a blank page."""
        return self.page_image().load_image()

    def page_image(self) -> PageImage:
        """Where this page's pixels come from, without its words, boxes and labels."""
        path = None if self.image_path is None else str(self.image_path)
        return PageImage(self.page_size, path, self.image_ref, self.image)


class PageImage:
    """Only what it takes to load a page's pixels: what a training run keeps of each document once its
    windows are encoded (about 200 bytes, against kilobytes of words, boxes and labels).

    Args:
        page_size: ``(width, height)``, for a blank page.
        image_path: the image file, if any.
        image_ref: a lazy dataset-row reference with ``load()``, if any.
        image: an image already in memory, if any (demo and prediction pages).
    """

    __slots__ = ("page_size", "image_path", "image_ref", "image")

    def __init__(self, page_size: tuple[int, int], image_path: str | None = None, image_ref: Any = None,
                 image: Image.Image | None = None) -> None:
        self.page_size, self.image_path, self.image_ref, self.image = page_size, image_path, image_ref, image

    def load_image(self) -> Image.Image:
        """The page as an RGB image: the loaded image, the file, the dataset row, or a blank page."""
        if self.image is not None:
            return self.image.convert("RGB")
        if self.image_ref is not None:
            return self.image_ref.load()
        if self.image_path is None:
            return Image.new("RGB", self.page_size, "white")
        from aetnet.data.ocr.images import open_image

        return open_image(self.image_path)


@dataclass
class QAExample:
    """A question about a page, for extractive question answering.

    Attributes:
        id: the question id.
        question: the question text.
        document: the page (words and boxes from the OCR).
        answers: every gold answer string.
        answer_span: ``(start_word, end_word)`` inclusive indices of the located answer in
            ``document.words``, or ``None`` when no answer could be located (kept and counted,
            never dropped silently).
    """

    id: str
    question: str
    document: Document
    answers: list[str] = field(default_factory=list)
    answer_span: tuple[int, int] | None = None


def page_images(documents: Sequence[Document]) -> list[PageImage]:
    """One :class:`PageImage` per document (one object per page when questions share a page)."""
    by_page: dict[int, PageImage] = {}
    out = []
    for doc in documents:
        if id(doc) not in by_page:
            by_page[id(doc)] = doc.page_image()
        out.append(by_page[id(doc)])
    return out
