"""``--on-bad-document``: stop on the first bad document, or skip it and say so.

Readers raise :class:`~aetnet.errors.DataError` for a broken file; :func:`screen_documents` checks
what can still go wrong later (boxes, images, empty pages) before training starts, so a bad page
fails in seconds instead of hours in. With ``skip`` every skipped document is recorded with its
reason, written to ``skipped.jsonl`` in the run folder and counted in the run summary: nothing is
dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PIL import Image

from aetnet.data.documents.boxes import document_boxes
from aetnet.data.documents.document import Document
from aetnet.errors import DataError

logger = logging.getLogger(__name__)


class BadDocuments:
    """Applies the ``error``/``skip`` policy and keeps the record of skipped documents."""

    def __init__(self, mode: str = "error"):
        if mode not in ("error", "skip"):
            raise ValueError(f"on_bad_document must be 'error' or 'skip', got {mode!r}")
        self.mode = mode
        self.records: list[dict[str, Any]] = []
        #: Units (files, rows, label lines, questions) the readers were given, counted by the readers.
        self.given = 0

    def count(self, n: int) -> None:
        """Record that a reader was given ``n`` more units (documents, rows, label lines, questions)."""
        self.given += n

    def summary(self, used: dict[str, int]) -> dict[str, Any]:
        """The accounting of a run: given = used + skipped + not used, for the log and ``metrics.json``.

        Args:
            used: documents (or questions) used per split after screening, e.g. ``{"train": 12, "eval": 6}``.

        Returns:
            ``documents_given``, ``documents_used``, ``documents_skipped`` and ``documents_not_used``
            (in splits the task does not use, or beyond ``data.max_*_documents``), plus ``message``,
            the sentence to log.
        """
        n_used, n_skipped = sum(used.values()), len(self.records)
        not_used = self.given - n_used - n_skipped
        parts = ", ".join(f"{split} {n}" for split, n in used.items())
        if not_used < 0:  # a reader that does not count what it is given: say so rather than print nonsense
            return {"documents_given": None, "documents_used": n_used, "documents_skipped": n_skipped,
                    "documents_not_used": None,
                    "message": f"documents: {n_used} used ({parts}) + {n_skipped} skipped (this reader does not "
                               "count the documents it is given)"}
        message = f"documents: {self.given} given = {n_used} used ({parts}) + {n_skipped} skipped"
        if n_skipped:
            message += " (listed in skipped.jsonl)"
        if not_used:
            message += f" + {not_used} not used (splits the task does not use, or beyond data.max_*_documents)"
        return {"documents_given": self.given, "documents_used": n_used, "documents_skipped": n_skipped,
                "documents_not_used": not_used, "message": message}

    def write(self, path) -> None:
        """Write one JSON line per skipped document (split, id, source, reason) to ``path``."""
        from aetnet.data.documents.jsonl import write_jsonl

        write_jsonl(path, self.records)

    def handle(self, error: DataError, split: str, doc_id: str | None = None, source: str | None = None) -> None:
        """Re-raise ``error`` (mode ``error``) or record it (mode ``skip``)."""
        if self.mode == "error":
            raise error
        self.records.append({"split": split, "id": doc_id, "source": source or error.path, "reason": str(error)})

    def run(self, fn: Callable[[], Any], split: str, doc_id: str | None = None, source: str | None = None):
        """Call ``fn``; a :class:`DataError` is handled by the policy and gives ``None``."""
        try:
            return fn()
        except DataError as exc:
            self.handle(exc, split, doc_id, source)
            return None


def guarded(policy: BadDocuments | None, fn: Callable[[], Any], split: str, doc_id: str | None = None,
            source: str | None = None):
    """``fn()`` under ``policy`` (``None``: errors propagate); ``None`` for a skipped document."""
    return fn() if policy is None else policy.run(fn, split, doc_id, source)


def count_given(policy: BadDocuments | None, n: int) -> None:
    """Tell ``policy`` (if any) that a reader was given ``n`` units; see :meth:`BadDocuments.summary`."""
    if policy is not None:
        policy.count(n)


def check_document(doc: Document, box_level: str, need_words: bool) -> None:
    """Raise :class:`DataError` for what would break training on ``doc`` later."""
    where = doc.source or doc.id
    if need_words and not doc.words:
        raise DataError(
            f"document '{doc.id}' has no words; remove it or pass --on-bad-document skip", where, "words"
        )
    document_boxes(doc, box_level, as_array=True)
    if box_level != "word":  # the word boxes are used too (windows carry each token's word box)
        document_boxes(doc, "word", as_array=True)
    if doc.image is None and doc.image_ref is not None:
        doc.image_ref.size()  # the row holds a readable image header (pixels stay on disk)
    if doc.image is None and doc.image_path is not None:
        # Name the line or file that refers to the image (a pages.jsonl line), and the image itself.
        where, image = doc.source or doc.image_path, f"image {doc.image_path}: " if doc.source else ""
        try:
            with Image.open(doc.image_path) as img:
                img.verify()
        except FileNotFoundError:
            raise DataError(f"{image}image file does not exist; check the dataset layout", where, "image") from None
        except Exception as exc:  # PIL raises many types for broken files
            raise DataError(
                f"{image}image cannot be decoded ({exc}); the file is corrupt or truncated: re-export or remove it",
                where,
                "image",
            ) from None
        from aetnet.data.ocr.images import image_size

        try:
            image_size(doc.image_path)  # over the page pixel limit (a bomb that PIL only warns about)
        except DataError as exc:
            from aetnet.data.documents.page_checks import image_error_at

            raise image_error_at(exc, doc.image_path, where) if doc.source else exc from None


def screen_documents(
    examples: list[Any], documents: list[Document], split: str, box_level: str, need_words: bool,
    policy: BadDocuments,
) -> list[Any]:
    """The examples whose documents pass :func:`check_document` (all of them, or an error, in mode ``error``)."""
    kept = []
    for example, doc in zip(examples, documents):
        ok = policy.run(lambda d=doc: check_document(d, box_level, need_words) or True, split, doc.id, doc.source)
        if ok:
            kept.append(example)
    dropped = len(examples) - len(kept)
    if dropped:
        logger.warning("%s: skipped %d bad document(s); see skipped.jsonl in the run folder", split, dropped)
    return kept
