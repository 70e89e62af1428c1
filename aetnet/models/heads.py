"""The transformers LayoutLMv3 head class for each task kind (token, sequence, qa)."""

from __future__ import annotations

HEAD_CLASSES = {
    "token": "LayoutLMv3ForTokenClassification",
    "sequence": "LayoutLMv3ForSequenceClassification",
    "qa": "LayoutLMv3ForQuestionAnswering",
}


def head_class(kind: str):
    """The transformers LayoutLMv3 class with the head for a task kind."""
    import transformers

    return getattr(transformers, HEAD_CLASSES[kind])
