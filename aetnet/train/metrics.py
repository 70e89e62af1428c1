"""Task metrics: seqeval entity scores for token labelling."""

from __future__ import annotations

from typing import Any


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Seqeval entity-level precision, recall and F1 over BIO sequences (strict span match).

    Args:
        gold: per document, the gold label of every word.
        pred: per document, the predicted label of every word (same lengths).

    Returns:
        ``precision``, ``recall``, ``f1`` (micro) and ``per_label`` {entity: {precision, recall, f1,
        support}}.
    """
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    for g, p in zip(gold, pred):
        if len(g) != len(p):
            raise ValueError(f"gold and predicted sequences differ in length ({len(g)} vs {len(p)})")
    if not any(gold):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "per_label": {}}
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_label = {
        name: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    return {
        "precision": float(precision_score(gold, pred, zero_division=0)),
        "recall": float(recall_score(gold, pred, zero_division=0)),
        "f1": float(f1_score(gold, pred, zero_division=0)),
        "per_label": per_label,
    }
