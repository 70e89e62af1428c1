"""The training data of a run once prepared, and its hand-over to the other processes of a node.

Under ``torchrun``/``accelerate launch`` the main process of each node reads the documents, fills the
OCR and window caches and builds the training set (:func:`aetnet.train.distributed.local_main_first`).
What the node's other processes need of it is small: the window cache entries (memory-mapped files),
one :class:`~aetnet.data.documents.document.PageImage` per page, the label set and what the task learnt from the
data (a discovered label set or relation schema). :func:`prepared_data` packs that and
:func:`take_prepared_data` unpacks it, so those processes never read a document: at RVL-CDIP scale
(320,000 pages of about 30 KB as read) that is gigabytes per process and a pass over every page image
(the OCR cache key is its bytes) that only the main process makes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aetnet.data.documents.document import PageImage, page_images
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.encoding.store import WindowStore
from aetnet.data.encoding.windows import WindowDataset
from aetnet.inference.evaluation import EvalSet

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """What a node's waiting processes receive instead of reading the data.

    Attributes:
        labels: label names in id order (``None`` for QA).
        eval_split: the split (or carve-out) that is scored.
        selection_split: the validation split, if the run validates.
        train_documents: the number of training documents.
        train_windows: the training windows (a window cache entry).
        train_pages: one image reference per training document.
        validation: the validation windows and page images, if the run validates.
        task_state: what the task set while reading (for example a label set discovered in the data).
    """

    labels: list[str] | None
    eval_split: str
    selection_split: str | None
    train_documents: int
    train_windows: WindowStore
    train_pages: list[PageImage]
    validation: tuple[WindowStore, list[PageImage]] | None
    task_state: dict[str, Any]


def training_dataset(ctx, windows, pages) -> WindowDataset:
    """The dataset the Trainer reads: ``windows``, their pages' images and the strategy's extra views."""
    cfg, strategy = ctx.cfg, ctx.strategy
    views = strategy.extra_views(cfg, ctx.processor)
    with_ids = getattr(strategy, "uses_doc_ids", False) and cfg.aet.mask_same_document
    return WindowDataset(windows, pages, ctx.processor.image_processor, views, with_ids,
                         group_pages=ctx.task.kind == "relation")


def _by_reference(windows, pages: list[PageImage]) -> bool:
    """Whether windows and pages can be handed over as references (a cache entry; images not in memory)."""
    return isinstance(windows, WindowStore) and all(page.image is None for page in pages)


def prepared_data(ctx) -> PreparedData | None:
    """What the node's other processes need of ``ctx`` after :func:`~aetnet.train.runner.encode_training`;
    ``None`` when it cannot go by reference (``data.window_cache=false``, or pages held in memory): they
    then read the data themselves, from the caches."""
    train_pages = list(ctx.train_ds.documents)
    if not _by_reference(ctx.train_windows, train_pages):
        return None
    validation = None
    if ctx.validator is not None:
        val_pages = page_images(ctx.validator.dataset.documents)
        if not _by_reference(ctx.validator.windows, val_pages):
            return None
        validation = (ctx.validator.windows, val_pages)
    state = {key: value for key, value in vars(ctx.task).items() if key != "bad_documents"}
    return PreparedData(ctx.labels, ctx.eval_split, ctx.selection_split, ctx.train_documents, ctx.train_windows,
                        train_pages, validation, state)


def take_prepared_data(ctx, prepared: PreparedData) -> None:
    """Fill ``ctx`` as :func:`~aetnet.train.runner.load_data` and ``encode_training`` would have, from what
    the node's main process prepared (no document is read)."""
    cfg, task = ctx.cfg, ctx.task
    ctx.policy = BadDocuments(cfg.data.on_bad_document)  # bad documents are the main process's to report
    task.bad_documents = ctx.policy
    for key, value in prepared.task_state.items():
        setattr(task, key, value)
    ctx.labels, ctx.eval_split, ctx.selection_split = prepared.labels, prepared.eval_split, prepared.selection_split
    ctx.train_documents, ctx.train_windows = prepared.train_documents, prepared.train_windows
    ctx.train_ds = training_dataset(ctx, prepared.train_windows, prepared.train_pages)
    if prepared.validation is not None:
        windows, pages = prepared.validation
        ctx.validator = EvalSet.from_prepared(task, ctx.processor, windows, pages, cfg, ctx.labels)
    logger.info("using the data prepared by the main process of this node, no document read here: %d training "
                "documents, %d windows in %s", ctx.train_documents, len(ctx.train_windows), ctx.train_windows.folder)
