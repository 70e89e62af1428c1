"""Question + page -> LayoutLMv3 windows with answer positions, and model scores -> answer spans.

Extractive QA encodes each question as the first sequence and the page's words as the second
(``<s> question </s></s> words </s>``), truncating only the words; pages longer than
``max_length`` tokens become overlapping windows (``stride`` shared word tokens). Question tokens
carry the box ``[0, 0, 0, 0]`` and no word id, so nothing downstream mistakes them for page words.

Targets are token positions: the first subword of the answer's first word and the last subword of
its last word. A window that does not hold the whole span, and every window of an example whose
answer could not be located on the page, points both positions at 0 (``<s>``): "no answer here",
as in SQuAD 2.0-style training. Decoding takes, over all windows of an example, the span of page
tokens with the highest start + end score (start <= end, at most ``max_answer_tokens`` tokens) and
maps it back to words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aetnet.data.documents.boxes import document_boxes
from aetnet.data.documents.document import QAExample
from aetnet.data.encoding.windows import Window, softmax
from aetnet.errors import DataError

logger = logging.getLogger(__name__)

#: Tokens of ``<s> q </s></s> words </s>`` that are neither question nor words (RoBERTa pairs).
PAIR_SPECIAL_TOKENS = 4
NO_ANSWER = 0


@dataclass
class SpanPrediction:
    """The decoded answer of one example.

    Attributes:
        start_word / end_word: inclusive word indices in the page's words.
        score: start logit + end logit of the chosen tokens.
    """

    start_word: int
    end_word: int
    score: float


def encode_qa_examples(
    examples: Sequence[QAExample],
    tokenizer,
    max_length: int = 512,
    stride: int = 128,
) -> list[Window]:
    """Tokenise question/page pairs into windows with start/end targets.

    Words get their own 0-1000 boxes (word level: DocVQA has no entity segments), so ``word_bbox``
    equals ``bbox`` (question and special tokens ``[0, 0, 0, 0]`` in both).

    Args:
        examples: questions with their page (``answer_span`` may be ``None``).
        tokenizer: a LayoutLMv3 tokenizer.
        max_length: tokens per window including the question and special tokens.
        stride: word tokens shared by consecutive windows (reduced when the question leaves too
            little room for it).

    Returns:
        Windows in example order; ``doc_index`` is the example's index, ``word_ids`` is ``None`` for
        special and question tokens, ``start_positions``/``end_positions`` are token indices
        (0 = ``<s>`` when the window does not hold the whole located answer).

    Raises:
        DataError: a question too long to leave room for any page word.
    """
    windows: list[Window] = []
    for index, example in enumerate(examples):
        doc = example.document
        question_words = example.question.split() or [""]
        question_tokens = len(tokenizer(question_words, boxes=[[0, 0, 0, 0]] * len(question_words),
                                        add_special_tokens=False)["input_ids"])
        room = max_length - question_tokens - PAIR_SPECIAL_TOKENS
        if room < 8:
            raise DataError(
                f"question '{example.question[:60]}' takes {question_tokens} tokens and leaves {room} of "
                f"max_length={max_length} for the page; shorten it or raise data.max_length",
                doc.source or doc.id,
                f"question {example.id}",
            )
        if not doc.words:
            windows.append(_question_only_window(index, example.question, tokenizer, max_length))
            continue
        window_stride = min(stride, room // 2)
        if window_stride < stride:
            logger.debug("question %s: stride %d reduced to %d to fit max_length", example.id, stride,
                         window_stride)
        enc = tokenizer(
            example.question,
            doc.words,
            boxes=document_boxes(doc, "word"),
            truncation="only_second",
            max_length=max_length,
            stride=window_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
        for w in range(len(enc["input_ids"])):
            sequence_ids = enc.sequence_ids(w)
            word_ids = [word if seq == 1 else None for word, seq in zip(enc.word_ids(w), sequence_ids)]
            boxes = [list(b) if seq == 1 else [0, 0, 0, 0] for b, seq in zip(enc["bbox"][w], sequence_ids)]
            start, end = _answer_positions(example.answer_span, word_ids, enc["offset_mapping"][w], doc.words)
            windows.append(
                Window(doc_index=index, input_ids=list(enc["input_ids"][w]), bbox=boxes, word_ids=word_ids,
                       start_positions=start, end_positions=end, word_bbox=boxes)
            )
    return windows


def _question_only_window(index: int, question: str, tokenizer, max_length: int) -> Window:
    """``<s> question </s>`` for a page without words: still evaluated (it can only answer "")."""
    words = question.split() or [""]
    enc = tokenizer(words, boxes=[[0, 0, 0, 0]] * len(words), truncation=True, max_length=max_length)
    n = len(enc["input_ids"])
    return Window(index, list(enc["input_ids"]), [[0, 0, 0, 0]] * n, [None] * n,
                  start_positions=NO_ANSWER, end_positions=NO_ANSWER, word_bbox=[[0, 0, 0, 0]] * n)


def _answer_positions(
    span: tuple[int, int] | None,
    word_ids: list[int | None],
    offsets: Sequence[tuple[int, int]],
    words: Sequence[str],
) -> tuple[int, int]:
    """Token positions of ``span`` in one window, or ``(0, 0)`` unless the window holds all of it.

    A window may begin or end inside a word (truncation counts tokens); character offsets tell
    whether a token really is its word's first subword (offset starts at 0) or last subword
    (offset ends at the word's length), so a cut answer word is never taken for a whole one.
    """
    if span is None:
        return NO_ANSWER, NO_ANSWER
    first_word, last_word = span
    start = end = None
    for pos, word in enumerate(word_ids):
        if word == first_word and start is None and offsets[pos][0] == 0:
            start = pos
        if word == last_word and offsets[pos][1] == len(words[last_word]):
            end = pos
    if start is None or end is None or end < start:
        return NO_ANSWER, NO_ANSWER
    return start, end


def decode_spans(
    windows: Sequence[Window],
    outputs: Sequence[tuple[np.ndarray, np.ndarray]],
    num_examples: int,
    max_answer_tokens: int = 30,
) -> list[SpanPrediction | None]:
    """The most probable answer span of every example over all of its windows.

    In each window the start and end logits are soft-maxed over the page tokens and ``<s>``
    (position 0, where training points windows that do not hold the answer), so a window the model
    calls answerless keeps that mass instead of inflating one of its spans, and scores of different
    windows are comparable. A span of page tokens scores ``p_start * p_end`` and needs
    ``start <= end < start + max_answer_tokens``. Training evaluation and ``aetnet predict`` both
    decode with this function.

    Args:
        windows: the encoded windows, in the order of ``outputs``.
        outputs: per window, ``(start_logits (L,), end_logits (L,))`` (L >= the window's tokens).
        num_examples: examples the windows came from (``doc_index`` indexes them).
        max_answer_tokens: the longest span allowed, in tokens.

    Returns:
        Per example, the best span in words (score in (0, 1]), or ``None`` when none of its
        windows holds a word.
    """
    best: list[SpanPrediction | None] = [None] * num_examples
    for window, (start_logits, end_logits) in zip(windows, outputs):
        positions = np.array([p for p, w in enumerate(window.word_ids) if w is not None], dtype=np.int64)
        if positions.size == 0:
            continue
        normaliser = np.concatenate([[0], positions])
        p_start, p_end = (softmax(np.asarray(x, dtype=np.float64)[normaliser])[1:]
                          for x in (start_logits, end_logits))
        scores = p_start[:, None] * p_end[None, :]
        gap = positions[None, :] - positions[:, None]  # end token - start token
        scores[(gap < 0) | (gap >= max_answer_tokens)] = -1.0
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        score = float(scores[i, j])
        current = best[window.doc_index]
        if score >= 0 and (current is None or score > current.score):
            best[window.doc_index] = SpanPrediction(
                window.word_ids[positions[i]], window.word_ids[positions[j]], score
            )
    return best
