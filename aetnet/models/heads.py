"""The head class for each task kind and base family (token, sequence, qa from transformers; relation ours),
the names of the logits each returns, and a batch's logits cut back into one output per window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

HEAD_CLASSES = {
    "token": "LayoutLMv3ForTokenClassification",
    "sequence": "LayoutLMv3ForSequenceClassification",
    "qa": "LayoutLMv3ForQuestionAnswering",
    "relation": "LayoutLMv3ForRelationExtraction",
}


def head_class(kind: str, family=None):
    """The class with the head for a task kind: LayoutLMv3's, or that of ``family``
    (a :class:`aetnet.bases.BaseFamily`, e.g. LiLT's)."""
    name = HEAD_CLASSES[kind] if family is None else family.heads[kind]
    if kind == "relation":
        from aetnet.models import relation

        return getattr(relation, name)
    import transformers

    return getattr(transformers, name)


def output_names(kind: str) -> tuple[str, ...]:
    """Names of the logits a model of ``kind`` returns."""
    return ("start_logits", "end_logits") if kind == "qa" else ("logits",)


def window_outputs(kind: str, logits: Mapping[str, Any], lengths: Sequence[int]) -> list[Any]:
    """One output per window of a batch, padding cut off.

    Args:
        kind: the task kind.
        logits: :func:`output_names` -> (B, L, ...) arrays (QA: (B, L); sequence: (B, C); token: (B, L, C);
            relation: (B, E, K), one row per entity).
        lengths: per window, its tokens (relation: its entities); B of them.

    Returns:
        Per window: ``(start (n,), end (n,))`` for QA, the class logits (C,) for sequence, else the first
        ``n`` rows.
    """
    if kind == "qa":
        return [(s[:n], e[:n]) for s, e, n in zip(logits["start_logits"], logits["end_logits"], lengths)]
    if kind == "sequence":
        return [row for row, _ in zip(logits["logits"], lengths)]
    return [row[:n] for row, n in zip(logits["logits"], lengths)]
