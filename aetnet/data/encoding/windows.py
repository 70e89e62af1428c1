"""Documents -> model inputs with the LayoutLMv3 processor, windows for long documents, and back.

Text is tokenised up front (cheap, and it fixes how many windows each document needs); images are
loaded and processed lazily by :class:`WindowDataset`, so a dataset of many pages never sits in
memory as pixels. Documents longer than ``max_length`` tokens are split into overlapping windows
(``stride`` shared tokens) by the tokenizer; :func:`merge_token_predictions` gives every word back
exactly one prediction, taken from the window where the word has the most context on both sides.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aetnet.data.documents.boxes import document_boxes
from aetnet.data.documents.document import Document
from aetnet.errors import AetnetError

IGNORE_INDEX = -100


@dataclass
class Window:
    """One model input: a slice of a document's tokens.

    Attributes:
        doc_index: index of the source document (or example) in its split.
        input_ids: token ids including ``<s>``/``</s>``.
        bbox: one 0-1000 box per token, the boxes LayoutLMv3 sees (segment- or word-level per
            ``data.box_level``).
        word_ids: the word each token comes from (``None`` for special and question tokens).
        labels: token labels (first subword only, -100 elsewhere), or the document label, or None.
        start_positions / end_positions: answer span in tokens for QA (0 = no answer here).
        word_bbox: one 0-1000 box per token, the box of the token's own word (normalised like
            ``bbox``), ``[0, 0, 0, 0]`` for special, question and pad tokens; what PITA locates
            text with. ``None`` only for windows built by hand.
    """

    doc_index: int
    input_ids: list[int]
    bbox: list[list[int]]
    word_ids: list[int | None]
    labels: list[int] | int | None = None
    start_positions: int | None = None
    end_positions: int | None = None
    word_bbox: list[list[int]] | None = None

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Model inputs beyond the common ones (a relation window's entities); none for a plain window."""
        return {}


NO_BOX = [0, 0, 0, 0]


def word_boxes_of(word_ids: Sequence[int | None], word_boxes: Sequence[list[int]]) -> list[list[int]]:
    """Per token, the 0-1000 box of its own word (``[0, 0, 0, 0]`` where the word id is ``None``).

    The tokens of one word share that word's box list (one pointer per token, not a new list):
    treat the result as read-only.
    """
    return [word_boxes[w] if w is not None else NO_BOX for w in word_ids]


def window_starts(num_tokens: int, room: int, stride: int) -> list[int]:
    """Where each window starts in a document's content tokens (the tokenizer's overflow rule).

    Windows hold ``room`` content tokens; each next one starts ``room - stride`` tokens later, and
    the last one is the first that reaches the end.

    Args:
        num_tokens: content tokens of the document (no special tokens).
        room: content tokens per window (``max_length`` minus the special tokens).
        stride: tokens shared by consecutive windows (``0 <= stride < room``).
    """
    starts = [0]
    while starts[-1] + room < num_tokens:
        starts.append(starts[-1] + room - stride)
    return starts


def encode_token_documents(
    docs: Sequence[Document],
    tokenizer,
    label2id: dict[str, int] | None,
    max_length: int = 512,
    stride: int = 128,
    box_level: str = "segment",
) -> list[Window]:
    """Tokenise token-labelling documents into windows.

    Each document is tokenised once, whole; windows are then slices of ``max_length - 2`` content
    tokens between ``<s>`` and ``</s>``, each sharing ``stride`` tokens with the previous one (the
    first window is exactly what the tokenizer gives with ``truncation=True``). Labels go on the
    first subword of each word only, in EVERY window: a word cut by a window boundary carries no
    label on the continuation subwords that open the next window, so the loss and the metric count
    each word once per window that holds its start.

    Args:
        docs: documents with pixel boxes (and ``labels`` when ``label2id`` is given).
        tokenizer: a LayoutLMv3 tokenizer (the processor's).
        label2id: label string -> id; ``None`` for unlabelled documents (inference).
        max_length: tokens per window including special tokens.
        stride: tokens shared by consecutive windows.
        box_level: ``segment`` or ``word`` boxes for ``bbox``; ``word_bbox`` is always word-level.

    Raises:
        AetnetError: ``stride`` leaves no room for new tokens in a window.
    """
    room = max_length - 2
    if not 0 <= stride < room:
        raise AetnetError(f"data.stride={stride} must be >= 0 and below data.max_length - 2 = {room}; "
                          "lower data.stride or raise data.max_length")
    windows: list[Window] = []
    for index, doc in enumerate(docs):
        if not doc.words:
            # An empty page still yields one window (<s></s>), so it is evaluated, not lost.
            windows.append(Window(index, [tokenizer.cls_token_id, tokenizer.sep_token_id],
                                  [list(NO_BOX)] * 2, [None, None], [IGNORE_INDEX] * 2,
                                  word_bbox=[list(NO_BOX)] * 2))
            continue
        word_labels = None
        if label2id is not None and doc.labels is not None:
            word_labels = [label2id[label] for label in doc.labels]
        windows.extend(_document_windows(index, doc, tokenizer, word_labels, room, stride, box_level))
    return windows


def _document_windows(index: int, doc: Document, tokenizer, word_labels: list[int] | None, room: int,
                      stride: int, box_level: str) -> list[Window]:
    """The windows of one non-empty document (see :func:`encode_token_documents`)."""
    enc = tokenizer(doc.words, boxes=document_boxes(doc, box_level), add_special_tokens=False,
                    truncation=False, padding=False, verbose=False)
    ids, boxes, word_ids = list(enc["input_ids"]), enc["bbox"], enc.word_ids()
    word_box = document_boxes(doc, "word")
    first = [w is not None and (p == 0 or word_ids[p - 1] != w) for p, w in enumerate(word_ids)]
    cls_box = list(getattr(tokenizer, "cls_token_box", NO_BOX))
    sep_box = list(getattr(tokenizer, "sep_token_box", NO_BOX))
    out = []
    for start in window_starts(len(ids), room, stride):
        span = range(start, min(start + room, len(ids)))
        window_words = [None] + [word_ids[p] for p in span] + [None]
        labels = None
        if word_labels is not None:
            labels = ([IGNORE_INDEX] + [word_labels[word_ids[p]] if first[p] else IGNORE_INDEX for p in span]
                      + [IGNORE_INDEX])
        out.append(Window(
            doc_index=index,
            input_ids=[tokenizer.cls_token_id] + [ids[p] for p in span] + [tokenizer.sep_token_id],
            bbox=[cls_box] + [list(boxes[p]) for p in span] + [sep_box],
            word_ids=window_words,
            labels=labels,
            word_bbox=word_boxes_of(window_words, word_box),
        ))
    return out


def keep_most_context(
    num_units: Sequence[int], occurrences: Iterable[tuple[int, int, int, int, Any]]
) -> list[list[np.ndarray | None]]:
    """Per document and unit (word, entity), the vector of its occurrence farthest from a window edge.

    Overlapping windows see a unit several times; the occurrence with the most context on both sides,
    ``min(position, window length - 1 - position)``, wins (the first one on a tie).

    Args:
        num_units: units per document, indexed by document.
        occurrences: ``(document, unit, position, window length, vector)`` for every occurrence.

    Returns:
        Per document, per unit, the chosen vector as an array (``None`` for a unit never seen).
    """
    merged: list[list[np.ndarray | None]] = [[None] * n for n in num_units]
    best: list[list[int]] = [[-1] * n for n in num_units]
    for doc, unit, pos, length, vector in occurrences:
        context = min(pos, length - 1 - pos)
        if context > best[doc][unit]:
            best[doc][unit] = context
            merged[doc][unit] = np.asarray(vector)
    return merged


def merge_token_predictions(
    windows: Sequence[Window], logits: Sequence[np.ndarray], num_words: Sequence[int]
) -> list[list[np.ndarray | None]]:
    """One score vector per word, merged over overlapping windows.

    A word seen in several windows takes its first-subword scores from the window where that token
    is farthest from a window edge (the most context on both sides).

    Args:
        windows: the windows, in the order of ``logits``.
        logits: per window, an array (tokens, num_labels) (extra padding rows are ignored).
        num_words: words per document, indexed by ``doc_index``.

    Returns:
        Per document, per word, the chosen score vector (``None`` if no window held the word).
    """
    def first_subwords():
        for window, window_logits in zip(windows, logits):
            length, previous = len(window.input_ids), None
            for pos, word in enumerate(window.word_ids):
                if word is not None and word != previous:
                    yield window.doc_index, word, pos, length, window_logits[pos]
                previous = word

    return keep_most_context(num_words, first_subwords())


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities from logits along ``axis`` (shifted by the maximum, so large logits do not overflow)."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def word_predictions(merged: Sequence[np.ndarray | None], id2label: Any) -> tuple[list[str], list[float]]:
    """The label and its probability for every word of one document.

    Args:
        merged: per word, its score vector (num_labels,) from :func:`merge_token_predictions`, or
            ``None`` for a word no window held.
        id2label: label id -> name (a dict or a list).

    Returns:
        ``(labels, probabilities)``: the most probable label of each word and its softmax probability;
        ``"O"`` and 0.0 for a word without scores.
    """
    labels, confidences = [], []
    for vec in merged:
        if vec is None:
            labels.append("O")
            confidences.append(0.0)
            continue
        probs = softmax(np.asarray(vec, dtype=np.float64))
        labels.append(id2label[int(probs.argmax())])
        confidences.append(float(probs.max()))
    return labels, confidences


class WindowDataset(torch.utils.data.Dataset):
    """Windows plus lazily processed page images.

    Args:
        windows: encoded text windows (a list, or a memory-mapped
            :class:`~aetnet.data.encoding.store.WindowStore`).
        documents: the source pages (``windows[i].doc_index`` indexes them): Documents, or only their
            :class:`~aetnet.data.documents.document.PageImage` (anything with ``load_image()``).
        image_processor: the LayoutLMv3 image processor (resize + normalise); ``None`` for a base without
            an image stream (LiLT): items then hold no ``pixel_values`` and no page image is read.
        extra_views: optional callable ``(image, index) -> dict`` adding tensors (for example the
            AET momentum view I+) to each item.
        doc_ids: add ``doc_ids`` (the window's document index) to each item, for models that keep
            windows of one document apart (AET's same-document masking).
    """

    def __init__(
        self,
        windows: Sequence[Window],
        documents: Sequence[Document],
        image_processor,
        extra_views: Callable[[Any, int], dict[str, torch.Tensor]] | None = None,
        doc_ids: bool = False,
        group_pages: bool = False,
    ):
        self.doc_ids = doc_ids
        #: training batches keep a page's windows together (relation tasks; :mod:`aetnet.data.encoding.page_batches`)
        self.group_pages = group_pages
        # a WindowStore stays memory-mapped (rows decoded per item); other sequences are kept as given
        self.windows = windows if isinstance(windows, Sequence) else list(windows)
        self.documents = documents
        self.image_processor = image_processor
        self.extra_views = extra_views
        #: The last page read, its index, image and processed pixels: consecutive windows of one page (a
        #: long document in evaluation order, a page-grouped training batch) decode and resize it once.
        self._page: tuple[int, Any, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers start without the parent's last page
        return {**self.__dict__, "_page": None}

    def page(self, doc_index: int) -> tuple[Any, np.ndarray]:
        """Page ``doc_index``'s image and its processed pixel values ``(3, H, W)``, read once for a run of
        windows of that page."""
        if self._page is None or self._page[0] != doc_index:
            image = self.documents[doc_index].load_image()
            pixels = self.image_processor(images=image, return_tensors="np")["pixel_values"][0]
            self._page = (doc_index, image, np.asarray(pixels, dtype=np.float32))
        return self._page[1], self._page[2]

    def __getitem__(self, i: int) -> dict[str, Any]:
        window = self.windows[i]
        item: dict[str, Any] = {
            "input_ids": torch.tensor(window.input_ids, dtype=torch.long),
            "bbox": torch.tensor(window.bbox, dtype=torch.long),
            "attention_mask": torch.ones(len(window.input_ids), dtype=torch.long),
        }
        image = None
        if self.image_processor is not None:  # a text+layout base (LiLT) reads no page image
            image, pixels = self.page(window.doc_index)
            item["pixel_values"] = torch.tensor(pixels)  # a copy: the page's array serves its next window too
        if isinstance(window.labels, list):
            item["labels"] = torch.tensor(window.labels, dtype=torch.long)
        elif isinstance(window.labels, int):
            item["labels"] = torch.tensor(window.labels, dtype=torch.long)
        if window.start_positions is not None:
            item["start_positions"] = torch.tensor(window.start_positions, dtype=torch.long)
            item["end_positions"] = torch.tensor(window.end_positions, dtype=torch.long)
        if window.word_bbox is not None:
            item["word_bbox"] = torch.tensor(window.word_bbox, dtype=torch.long)
        item.update(window.extra_tensors())  # e.g. the entities of a relation window
        if self.doc_ids:
            item["doc_ids"] = torch.tensor(window.doc_index, dtype=torch.long)
        if self.extra_views is not None:
            item.update(self.extra_views(image, i))
        return item


#: Per-entity tensors (relation windows) padded over every dimension to the batch's largest.
ENTITY_PADS = {"entity_positions": 0, "entity_labels": -1, "relation_labels": IGNORE_INDEX,
               "page_relation_labels": IGNORE_INDEX, "entity_index": 0, "entity_pages": -1, "entity_primary": False}


class Collator:
    """Pads a list of items to the longest sequence: ids with the pad id, boxes with zeros,
    attention with 0 and token labels with -100; entity tensors to the most entities
    (:data:`ENTITY_PADS`); stacks everything else.

    Args:
        pad_token_id: the tokenizer's pad id.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        word_boxes: emit ``word_bbox`` (B, L, 4), each token's own word box (zeros for special and
            pad tokens), for models that read it (AET's PITA). Off by default: plain LayoutLMv3
            heads do not accept it, so items' ``word_bbox`` is dropped.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, word_boxes: bool = False):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.word_boxes = word_boxes

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(item["input_ids"].shape[0] for item in items)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        if self.word_boxes and any("word_bbox" not in item for item in items):
            raise AetnetError("Collator(word_boxes=True) got items without 'word_bbox'; build the windows "
                              "with aetnet's encoders (they fill Window.word_bbox)")
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "bbox": 0, "word_bbox": 0,
                "labels": IGNORE_INDEX}
        for key in items[0]:
            if key == "word_bbox" and not self.word_boxes:
                continue
            values = [item[key] for item in items]
            if key in ENTITY_PADS:
                shape = [max(v.shape[d] for v in values) for d in range(values[0].dim())]
                out = values[0].new_full((len(values), *shape), ENTITY_PADS[key])
                for row, value in enumerate(values):
                    out[(row, *(slice(0, s) for s in value.shape))] = value
                batch[key] = out
                continue
            sequence_key = key in pads and values[0].dim() >= 1 and key != "labels" or (
                key == "labels" and values[0].dim() == 1
            )
            if sequence_key:
                out = values[0].new_full((len(values), length, *values[0].shape[1:]), pads[key])
                for row, value in enumerate(values):
                    out[row, : value.shape[0]] = value
                batch[key] = out
            else:
                batch[key] = torch.stack(values)
        return batch


#: The environment variable that gives ``train.num_workers`` its value when a run leaves it unset.
WORKERS_ENV = "AETNET_NUM_WORKERS"


def data_workers(num_workers: int | None) -> int:
    """DataLoader workers per process: ``num_workers``; for ``None`` the ``AETNET_NUM_WORKERS`` environment
    variable when set (e.g. ``0`` where many tiny runs share a process, as in the test suite: starting loader
    workers forks the whole training process), else ``min(8, cores / local processes)``.

    Raises:
        AetnetError: a negative count, or an ``AETNET_NUM_WORKERS`` that is not a count.
    """
    if num_workers is not None:
        if num_workers < 0:
            raise AetnetError(f"train.num_workers={num_workers} must be >= 0 (0: load data in the training process)")
        return int(num_workers)
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        if not text.isdigit():
            raise AetnetError(f"{WORKERS_ENV}={text!r} is not a number of DataLoader workers; set it to 0 (load data "
                              f"in the training process) or more, or unset it for the default")
        return int(text)
    from aetnet.data.ocr.pool import available_cores

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, available_cores() // local))
