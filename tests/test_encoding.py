"""Encoding with the LayoutLMv3 tokenizer: first-subword labels, windows and merging back."""

from __future__ import annotations

import numpy as np
import pytest

from aetnet.data.document import Document
from aetnet.data.encoding import IGNORE_INDEX, Collator, encode_token_documents, merge_token_predictions
from aetnet.data.processor import load_processor


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


def _long_doc(n_words: int) -> Document:
    words = [f"Invoice{i % 7}" if i % 3 else "total" for i in range(n_words)]
    boxes = [[(i % 20) * 10, (i // 20) * 10, (i % 20) * 10 + 9, (i // 20) * 10 + 9] for i in range(n_words)]
    labels = ["B-QUESTION" if i % 2 else "O" for i in range(n_words)]
    return Document("long", words, boxes, (200, 10 * (n_words // 20 + 1)), labels=labels)


def test_first_subword_labels(tokenizer):
    doc = Document("d", ["Extraordinarily", "x"], [[0, 0, 50, 10], [60, 0, 70, 10]], (100, 20),
                   labels=["B-ANSWER", "O"])
    (window,) = encode_token_documents([doc], tokenizer, {"O": 0, "B-ANSWER": 1}, 512, 0, "word")
    first = {}
    for pos, word in enumerate(window.word_ids):
        if word is not None and word not in first:
            first[word] = pos
    assert len([w for w in window.word_ids if w == 0]) > 1, "the long word should split into subwords"
    for pos, (word, label) in enumerate(zip(window.word_ids, window.labels)):
        if word is not None and first[word] == pos:
            assert label == [1, 0][word]
        else:
            assert label == IGNORE_INDEX
    assert window.bbox[0] == [0, 0, 0, 0] and window.bbox[first[0]] == [0, 0, 500, 500]


def test_three_times_max_length_gets_one_label_per_word(tokenizer):
    max_length, stride = 64, 16
    doc = _long_doc(150)
    label2id = {"O": 0, "B-QUESTION": 1}
    windows = encode_token_documents([doc], tokenizer, label2id, max_length, stride, "word")
    n_tokens = len(tokenizer(doc.words, boxes=[[0, 0, 0, 0]] * len(doc.words))["input_ids"])
    assert n_tokens >= 3 * max_length
    assert len(windows) >= 3 and all(len(w.input_ids) <= max_length for w in windows)
    # Every word's first subword carries its gold label in at least one window.
    seen = {}
    for w in windows:
        for word, label in zip(w.word_ids, w.labels):
            if label != IGNORE_INDEX:
                seen[word] = label
    assert seen == {i: label2id[label] for i, label in enumerate(doc.labels)}
    # Fake logits: in window k, token at position p scores (window k, position p).
    logits = [np.array([[k, p] for p in range(len(w.input_ids))], dtype=float) for k, w in enumerate(windows)]
    merged = merge_token_predictions(windows, logits, [len(doc.words)])[0]
    assert len(merged) == len(doc.words) and all(v is not None for v in merged)
    # Independently: for each word, the window whose first-subword position is farthest from an edge.
    for word in range(len(doc.words)):
        best = None
        for k, w in enumerate(windows):
            positions = [p for p, wid in enumerate(w.word_ids) if wid == word]
            if not positions or (positions[0] > 0 and w.word_ids[positions[0] - 1] == word):
                continue
            p = positions[0]
            ctx = min(p, len(w.input_ids) - 1 - p)
            if best is None or ctx > best[0]:
                best = (ctx, k, p)
        assert list(merged[word]) == [best[1], best[2]]


def test_empty_document_yields_one_window(tokenizer):
    doc = Document("empty", [], [], (10, 10), labels=[])
    windows = encode_token_documents([doc], tokenizer, {"O": 0}, 512, 128)
    assert len(windows) == 1 and windows[0].word_ids == [None, None]


def test_collator_pads_every_field():
    import torch

    items = [
        {"input_ids": torch.tensor([0, 5, 2]), "bbox": torch.ones(3, 4, dtype=torch.long),
         "attention_mask": torch.ones(3, dtype=torch.long), "labels": torch.tensor([-100, 1, -100]),
         "pixel_values": torch.zeros(3, 4, 4)},
        {"input_ids": torch.tensor([0, 2]), "bbox": torch.ones(2, 4, dtype=torch.long),
         "attention_mask": torch.ones(2, dtype=torch.long), "labels": torch.tensor([-100, -100]),
         "pixel_values": torch.ones(3, 4, 4)},
    ]
    batch = Collator(pad_token_id=1)(items)
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["bbox"][1, 2].tolist() == [0, 0, 0, 0]
    assert batch["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]
    assert batch["pixel_values"].shape == (2, 3, 4, 4)
