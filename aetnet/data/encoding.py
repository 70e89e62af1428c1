"""Documents -> model inputs with the LayoutLMv3 processor, windows for long documents, and back.

Text is tokenised up front (cheap, and it fixes how many windows each document needs); images are
loaded and processed lazily by :class:`WindowDataset`, so a dataset of many pages never sits in
memory as pixels. Documents longer than ``max_length`` tokens are split into overlapping windows
(``stride`` shared tokens) by the tokenizer; :func:`merge_token_predictions` gives every word back
exactly one prediction, taken from the window where the word has the most context on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aetnet.data.boxes import document_boxes
from aetnet.data.document import Document

IGNORE_INDEX = -100


@dataclass
class Window:
    """One model input: a slice of a document's tokens.

    Attributes:
        doc_index: index of the source document (or example) in its split.
        input_ids: token ids including ``<s>``/``</s>``.
        bbox: one 0-1000 box per token.
        word_ids: the word each token comes from (``None`` for special and question tokens).
        labels: token labels (first subword only, -100 elsewhere), or the document label, or None.
        start_positions / end_positions: answer span in tokens for QA (0 = no answer here).
    """

    doc_index: int
    input_ids: list[int]
    bbox: list[list[int]]
    word_ids: list[int | None]
    labels: list[int] | int | None = None
    start_positions: int | None = None
    end_positions: int | None = None


def encode_token_documents(
    docs: Sequence[Document],
    tokenizer,
    label2id: dict[str, int] | None,
    max_length: int = 512,
    stride: int = 128,
    box_level: str = "segment",
) -> list[Window]:
    """Tokenise token-labelling documents into windows.

    Labels go on the first subword of each word only; every other token gets -100, so the loss and
    the metric count each word once.

    Args:
        docs: documents with pixel boxes (and ``labels`` when ``label2id`` is given).
        tokenizer: a LayoutLMv3 tokenizer (the processor's).
        label2id: label string -> id; ``None`` for unlabelled documents (inference).
        max_length: tokens per window including special tokens.
        stride: tokens shared by consecutive windows.
        box_level: ``segment`` or ``word`` boxes.
    """
    windows: list[Window] = []
    for index, doc in enumerate(docs):
        boxes = document_boxes(doc, box_level)
        words = doc.words if doc.words else []
        word_labels = None
        if label2id is not None and doc.labels is not None:
            word_labels = [label2id[label] for label in doc.labels]
        if not words:
            # An empty page still yields one window (<s></s>), so it is evaluated, not lost.
            windows.append(Window(index, [tokenizer.cls_token_id, tokenizer.sep_token_id],
                                  [[0, 0, 0, 0]] * 2, [None, None], [IGNORE_INDEX] * 2))
            continue
        enc = tokenizer(
            words,
            boxes=boxes,
            word_labels=word_labels,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            padding=False,
        )
        for w in range(len(enc["input_ids"])):
            windows.append(
                Window(
                    doc_index=index,
                    input_ids=list(enc["input_ids"][w]),
                    bbox=[list(b) for b in enc["bbox"][w]],
                    word_ids=list(enc.word_ids(w)),
                    labels=list(enc["labels"][w]) if word_labels is not None else None,
                )
            )
    return windows


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
    merged: list[list[np.ndarray | None]] = [[None] * n for n in num_words]
    best: list[list[int]] = [[-1] * n for n in num_words]
    for window, window_logits in zip(windows, logits):
        length = len(window.input_ids)
        previous = None
        for pos, word in enumerate(window.word_ids):
            if word is None or word == previous:
                previous = word
                continue
            previous = word
            context = min(pos, length - 1 - pos)
            if context > best[window.doc_index][word]:
                best[window.doc_index][word] = context
                merged[window.doc_index][word] = np.asarray(window_logits[pos])
    return merged


class WindowDataset(torch.utils.data.Dataset):
    """Windows plus lazily processed page images.

    Args:
        windows: encoded text windows.
        documents: the source documents (``windows[i].doc_index`` indexes them).
        image_processor: the LayoutLMv3 image processor (resize + normalise).
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
    ):
        self.doc_ids = doc_ids
        self.windows = list(windows)
        self.documents = documents
        self.image_processor = image_processor
        self.extra_views = extra_views

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        window = self.windows[i]
        image = self.documents[window.doc_index].load_image()
        pixels = self.image_processor(images=image, return_tensors="np")["pixel_values"][0]
        item: dict[str, Any] = {
            "input_ids": torch.tensor(window.input_ids, dtype=torch.long),
            "bbox": torch.tensor(window.bbox, dtype=torch.long),
            "attention_mask": torch.ones(len(window.input_ids), dtype=torch.long),
            "pixel_values": torch.as_tensor(np.asarray(pixels, dtype=np.float32)),
        }
        if isinstance(window.labels, list):
            item["labels"] = torch.tensor(window.labels, dtype=torch.long)
        elif isinstance(window.labels, int):
            item["labels"] = torch.tensor(window.labels, dtype=torch.long)
        if window.start_positions is not None:
            item["start_positions"] = torch.tensor(window.start_positions, dtype=torch.long)
            item["end_positions"] = torch.tensor(window.end_positions, dtype=torch.long)
        if self.doc_ids:
            item["doc_ids"] = torch.tensor(window.doc_index, dtype=torch.long)
        if self.extra_views is not None:
            item.update(self.extra_views(image, i))
        return item


class Collator:
    """Pads a list of items to the longest sequence: ids with the pad id, boxes with zeros,
    attention with 0 and token labels with -100; stacks everything else."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(item["input_ids"].shape[0] for item in items)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "bbox": 0, "labels": IGNORE_INDEX}
        for key in items[0]:
            values = [item[key] for item in items]
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
