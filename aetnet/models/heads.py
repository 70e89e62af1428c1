"""The LayoutLMv3 head class for each task kind (token, sequence, qa from transformers; relation ours)."""

from __future__ import annotations

HEAD_CLASSES = {
    "token": "LayoutLMv3ForTokenClassification",
    "sequence": "LayoutLMv3ForSequenceClassification",
    "qa": "LayoutLMv3ForQuestionAnswering",
    "relation": "LayoutLMv3ForRelationExtraction",
}


def head_class(kind: str):
    """The transformers LayoutLMv3 class with the head for a task kind."""
    if kind == "relation":
        from aetnet.models.relation import LayoutLMv3ForRelationExtraction

        return LayoutLMv3ForRelationExtraction
    import transformers

    return getattr(transformers, HEAD_CLASSES[kind])
