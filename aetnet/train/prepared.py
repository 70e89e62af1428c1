"""The training data of a run once prepared, and its hand-over to the other processes of a node.

The runner's preparation stages return :class:`Components` (task, strategy, base weights, processor),
:class:`RunData` (the screened examples, the label set and the bad-document policy) and
:class:`TrainingSet` (what the Trainer reads).

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import PageImage, page_images
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.encoding.store import WindowStore
from aetnet.data.encoding.windows import WindowDataset
from aetnet.inference.evaluation import EvalSet
from aetnet.strategies.base import BasePaths, Strategy
from aetnet.tasks.base import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """What a run is made of (:func:`resolve_components`): the task, the strategy, the base weights and the
    processor, loaded once and passed to whatever needs it."""

    task: Task
    strategy: Strategy
    paths: BasePaths
    processor: Any


@dataclass(frozen=True)
class RunData:
    """The run's examples once read and screened (:func:`load_data`).

    Attributes:
        train: the training examples (a list or a :class:`DocumentStream`); empty once encoded
            (:meth:`without_training_examples`).
        eval: the scored split's examples.
        validation: the validation examples (the scored split's with ``data.select_on=test``).
        labels: label names in id order (``None`` for QA).
        selection_split: how the validation examples were chosen (``None``: the run does not validate).
        eval_split: which split (or carve-out) is scored.
        bad_documents: the run's ``--on-bad-document`` policy, holding the documents it skipped.
    """

    train: Any
    eval: list
    validation: list
    labels: list[str] | None
    selection_split: str | None
    eval_split: str
    bad_documents: BadDocuments

    @property
    def label2id(self) -> dict[str, int] | None:
        return {label: i for i, label in enumerate(self.labels)} if self.labels else None

    def without_training_examples(self) -> RunData:
        """The same data without the training Documents (words, boxes, labels): once encoded, training
        needs only the windows and one image reference per page, so neither this process nor its
        DataLoader workers hold them."""
        return replace(self, train=[])


@dataclass(frozen=True)
class TrainingSet:
    """What the Trainer reads (:func:`encode_training`).

    Attributes:
        dataset: windows, page images and the strategy's extra views.
        windows: the training windows (a window cache entry with ``data.window_cache``).
        documents: the number of training documents.
    """

    dataset: WindowDataset
    windows: Sequence
    documents: int


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
        task_state: what the task learnt while reading (:meth:`~aetnet.tasks.base.Task.data_state`: for
            example a label set discovered in the data).
    """

    labels: list[str] | None
    eval_split: str
    selection_split: str | None
    train_documents: int
    train_windows: WindowStore
    train_pages: list[PageImage]
    validation: tuple[WindowStore, list[PageImage]] | None
    task_state: dict[str, Any]


def training_dataset(cfg: RunConfig, parts: Components, windows, pages) -> WindowDataset:
    """The dataset the Trainer reads: ``windows``, their pages' images and the strategy's extra views
    ."""
    strategy, processor = parts.strategy, parts.processor
    views = strategy.extra_views(cfg, processor)
    with_ids = strategy.uses_doc_ids and cfg.aet.mask_same_document
    return WindowDataset(windows, pages, processor.image_processor, views, with_ids,
                         group_pages=parts.task.kind == "relation")


def _by_reference(windows, pages: list[PageImage]) -> bool:
    """Whether windows and pages can be handed over as references (a cache entry; images not in memory)."""
    return isinstance(windows, WindowStore) and all(page.image is None for page in pages)


def prepared_data(task: Task, data: RunData, training: TrainingSet, validator: EvalSet | None) -> PreparedData | None:
    """What the node's other processes need of the main process's ``data`` (:class:`RunData`),
    ``training`` (its :class:`TrainingSet`) and ``validator``; ``None`` when it cannot go by
    reference (``data.window_cache=false``, or pages held in memory): they then read the data themselves, from
    the caches."""
    train_pages = list(training.dataset.documents)
    if not _by_reference(training.windows, train_pages):
        return None
    validation = None
    if validator is not None:
        val_pages = page_images(validator.dataset.documents)
        if not _by_reference(validator.windows, val_pages):
            return None
        validation = (validator.windows, val_pages)
    return PreparedData(data.labels, data.eval_split, data.selection_split, training.documents, training.windows,
                        train_pages, validation, task.data_state())


def take_prepared_data(cfg: RunConfig, parts: Components,
                       prepared: PreparedData) -> tuple[RunData, TrainingSet, EvalSet | None]:
    """``(RunData, TrainingSet, validator)`` as :func:`~aetnet.train.runner.load_data`, ``encode_training`` and
    ``validation_set`` would have returned them, from what the node's main process prepared (no document is
    read; the examples stay empty, bad documents are the main process's to report)."""
    task = parts.task
    task.adopt_data_state(prepared.task_state)
    data = RunData([], [], [], prepared.labels, prepared.selection_split, prepared.eval_split,
                   BadDocuments(cfg.data.on_bad_document))
    training = TrainingSet(training_dataset(cfg, parts, prepared.train_windows, prepared.train_pages),
                           prepared.train_windows, prepared.train_documents)
    validator = None
    if prepared.validation is not None:
        windows, pages = prepared.validation
        validator = EvalSet.from_prepared(task, parts.processor, windows, pages, cfg, data.labels)
    logger.info("using the data prepared by the main process of this node, no document read here: %d training "
                "documents, %d windows in %s", training.documents, len(training.windows), training.windows.folder)
    return data, training, validator
