"""Answer strings for extractive document QA: locating them among OCR words, and scoring them.

DocVQA gives answers as free strings, not spans, and the page's words come from an OCR that may
split, merge or misread them. :func:`locate_answer` finds the word span to train on, trying the
strictest match first so that a clean match is never replaced by a fuzzy one. :func:`anls` is the
benchmark's metric (Average Normalized Levenshtein Similarity, Biten et al. 2019).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein


def _strip_punctuation(text: str) -> str:
    # Unicode category P* covers ASCII and typographic punctuation (quotes, dashes) alike.
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))


def normalize_answer(s: str) -> str:
    """Lowercase ``s``, drop punctuation and collapse whitespace: ``" The  U.S.A.! "`` -> ``"the usa"``."""
    return " ".join(_strip_punctuation(str(s).lower()).split())


def _exact_span(words: Sequence[str], target: list[str]) -> tuple[int, int] | None:
    n = len(target)
    if n == 0:
        return None
    for start in range(len(words) - n + 1):
        if list(words[start : start + n]) == target:
            return start, start + n - 1
    return None


def _normalized_span(norm_words: list[str], answer: str) -> tuple[int, int] | None:
    """First span whose normalised words equal the normalised answer, spaced or not.

    Comparing without spaces too catches OCR splits and merges (``"5,000"`` read as ``"5," "000"``).
    Spans start and end on words that survive normalisation, so a stray ``"-"`` is never included.
    """
    target = normalize_answer(answer)
    if not target:
        return None
    compact = target.replace(" ", "")
    for start, first in enumerate(norm_words):
        if not first:
            continue
        text = ""
        for end in range(start, len(norm_words)):
            if norm_words[end]:
                text = f"{text} {norm_words[end]}" if text else norm_words[end]
                if text == target or text.replace(" ", "") == compact:
                    return start, end
            if len(text.replace(" ", "")) > len(compact):
                break
    return None


def _fuzzy_span(
    norm_words: list[str], answer: str, threshold: float
) -> tuple[float, tuple[int, int]] | None:
    """Best-scoring span of about the answer's word count, with its rapidfuzz ratio in [0, 1]."""
    target = normalize_answer(answer)
    if not target:
        return None
    n_target = len(target.split())
    kept = [i for i, w in enumerate(norm_words) if w]  # spans over the words that carry text
    best: tuple[float, tuple[int, int]] | None = None
    for length in range(max(1, n_target - 1), n_target + 2):
        for k in range(len(kept) - length + 1):
            idx = kept[k : k + length]
            candidate = " ".join(norm_words[i] for i in idx)
            score = fuzz.ratio(candidate, target) / 100.0
            if score >= threshold and (best is None or score > best[0]):
                best = (score, (idx[0], idx[-1]))
    return best


def locate_answer(
    words: Sequence[str], answers: Sequence[str], fuzzy_threshold: float = 0.8
) -> tuple[int, int] | None:
    """Find the word span of the first answer that occurs among the page's words.

    Three passes over all answers, strictest first: the answer's whitespace-split words appear
    verbatim; they appear after :func:`normalize_answer` on both sides; the best fuzzy match
    (rapidfuzz ``ratio`` between normalised strings, over spans of the answer's word count +-1)
    scores at least ``fuzzy_threshold``.

    Args:
        words: the page's words (length W).
        answers: the gold answer strings, in order of preference.
        fuzzy_threshold: minimal similarity in [0, 1] for a fuzzy match; above 1 disables it.

    Returns:
        ``(start, end)`` inclusive word indices into ``words``, or ``None`` when no answer is found.
    """
    answers = [str(a) for a in answers if a is not None and str(a).strip()]
    if not words or not answers:
        return None
    for answer in answers:
        span = _exact_span(words, answer.split())
        if span is not None:
            return span
    norm_words = [normalize_answer(w) for w in words]
    for answer in answers:
        span = _normalized_span(norm_words, answer)
        if span is not None:
            return span
    best: tuple[float, tuple[int, int]] | None = None
    for answer in answers:
        found = _fuzzy_span(norm_words, answer, fuzzy_threshold)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    return None if best is None else best[1]


def _anls_text(s: str) -> str:
    return " ".join(str(s).strip().lower().split())


def anls(prediction: str, golds: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one prediction: max over golds of ``1 - NL`` where NL < threshold, else 0.

    NL is the Levenshtein distance normalised by the longer string's length, on lowercased strings
    with surrounding and repeated whitespace removed.

    Args:
        prediction: the predicted answer.
        golds: every accepted answer; an empty list scores 0.
        threshold: distances at or above this count as a wrong answer (0 score).

    Returns:
        The score in [0, 1].
    """
    pred = _anls_text(prediction)
    best = 0.0
    for gold in golds:
        distance = Levenshtein.normalized_distance(pred, _anls_text(gold))
        score = 1.0 - distance if distance < threshold else 0.0
        best = max(best, score)
    return best


def mean_anls(
    predictions: Sequence[str], golds_list: Sequence[Sequence[str]], threshold: float = 0.5
) -> float:
    """Mean :func:`anls` over questions (0.0 for none).

    Raises:
        ValueError: ``predictions`` and ``golds_list`` differ in length.
    """
    if len(predictions) != len(golds_list):
        raise ValueError(f"{len(predictions)} predictions but {len(golds_list)} gold answer lists")
    if not predictions:
        return 0.0
    return sum(anls(p, g, threshold) for p, g in zip(predictions, golds_list)) / len(predictions)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the prediction equals a gold answer after :func:`normalize_answer`, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))
