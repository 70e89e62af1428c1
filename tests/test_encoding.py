"""Encoding with the LayoutLMv3 tokenizer: first-subword labels, windows and merging back."""

from __future__ import annotations

import numpy as np
import pytest

from aetnet.data.documents.document import Document
from aetnet.data.encoding.processor import load_processor
from aetnet.data.encoding.windows import IGNORE_INDEX, Collator, encode_token_documents, merge_token_predictions


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


def _cut_word_doc() -> Document:
    """Words of several subwords each (the tiny vocabulary splits "Extraordinarily"), two entities."""
    words = ["Extraordinarily", "Invoice7", "total", "Extraordinarily"] * 12
    boxes = [[10 * i, 3 * i, 10 * i + 7, 3 * i + 2] for i in range(len(words))]
    segments = [0 if i < 20 else 1 for i in range(len(words))]
    labels = ["B-QUESTION" if i in (0, 20) else "I-QUESTION" for i in range(len(words))]
    return Document("cut", words, boxes, (997, 301), labels=labels, segment_ids=segments,
                    segment_boxes={0: [0, 0, 197, 59], 1: [200, 60, 477, 143]})


def test_no_continuation_subword_carries_a_label_in_any_window(tokenizer):
    doc = _cut_word_doc()
    label2id = {"O": 0, "B-QUESTION": 1, "I-QUESTION": 2}
    # Independent: the first subword of every word, from tokenising each word alone.
    first_id = {w: tokenizer([w], boxes=[[0, 0, 0, 0]], add_special_tokens=False)["input_ids"][0] for w in doc.words}
    cut = 0
    for max_length, stride in [(16, 0), (17, 3), (23, 5), (30, 11)]:
        windows = encode_token_documents([doc], tokenizer, label2id, max_length, stride, "word")
        assert len(windows) > 3
        for w in windows:
            starts_mid_word = w.word_ids[1] is not None and tokenizer.convert_ids_to_tokens(w.input_ids[1])[0] != "Ġ"
            cut += starts_mid_word
            for pos, (word, label) in enumerate(zip(w.word_ids, w.labels)):
                if label != IGNORE_INDEX:
                    assert word is not None and w.input_ids[pos] == first_id[doc.words[word]], (max_length, pos)
                    assert label == label2id[doc.labels[word]]
                elif word is not None and pos > 1 and w.word_ids[pos - 1] != word:
                    raise AssertionError(f"first subword of word {word} at {pos} has no label")
    assert cut > 0, "some window must begin inside a word for this test to mean anything"


def test_windows_match_the_tokenizer_overflow(tokenizer):
    """ids, boxes and word ids of every window equal the tokenizer's own overflowing windows."""
    doc = _cut_word_doc()
    from aetnet.data.documents.boxes import document_boxes

    for max_length, stride in [(16, 0), (23, 5), (512, 128)]:
        windows = encode_token_documents([doc], tokenizer, None, max_length, stride, "segment")
        enc = tokenizer(doc.words, boxes=document_boxes(doc, "segment"), truncation=True, max_length=max_length,
                        stride=stride, return_overflowing_tokens=True)
        assert len(windows) == len(enc["input_ids"])
        for k, w in enumerate(windows):
            assert w.input_ids == enc["input_ids"][k]
            assert w.bbox == [list(b) for b in enc["bbox"][k]]
            assert w.word_ids == enc.word_ids(k)


def test_word_bbox_is_each_tokens_own_word_box(tokenizer):
    doc = _cut_word_doc()
    windows = encode_token_documents([doc], tokenizer, None, 23, 5, "segment")
    width, height = doc.page_size
    for w in windows:
        assert len(w.word_bbox) == len(w.input_ids)
        for word, box, seg_box in zip(w.word_ids, w.word_bbox, w.bbox):
            if word is None:
                assert box == [0, 0, 0, 0]
                continue
            x0, y0, x1, y1 = doc.boxes[word]
            # by hand: truncated, as the reference int(1000 * x / width)
            assert box == [int(1000 * x0 / width), int(1000 * y0 / height), int(1000 * x1 / width),
                           int(1000 * y1 / height)]
            s = doc.segment_boxes[doc.segment_ids[word]]
            assert seg_box == [int(1000 * s[0] / width), int(1000 * s[1] / height), int(1000 * s[2] / width),
                               int(1000 * s[3] / height)]
    assert any(w.bbox != w.word_bbox for w in windows)


def test_collator_word_boxes_only_when_asked():
    import torch

    items = [
        {"input_ids": torch.tensor([0, 5, 2]), "bbox": torch.ones(3, 4, dtype=torch.long),
         "word_bbox": torch.tensor([[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]])},
        {"input_ids": torch.tensor([0, 2]), "bbox": torch.ones(2, 4, dtype=torch.long),
         "word_bbox": torch.zeros(2, 4, dtype=torch.long)},
    ]
    assert "word_bbox" not in Collator(pad_token_id=1)(items)
    batch = Collator(pad_token_id=1, word_boxes=True)(items)
    assert batch["word_bbox"].shape == (2, 3, 4) and batch["word_bbox"].dtype == torch.long
    assert batch["word_bbox"][0, 1].tolist() == [1, 2, 3, 4]
    assert batch["word_bbox"][1].tolist() == [[0, 0, 0, 0]] * 3
