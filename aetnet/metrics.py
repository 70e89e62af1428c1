"""Task metrics: seqeval entity scores for token labelling; accuracy, macro-F1 and the confusion matrix
for page classification."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
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


def classification_metrics(
    y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix of a classification run.

    Macro-F1 averages over the classes that occur in ``y_true`` or ``y_pred`` (a class absent from
    both has no F1 to average; including it as 0 would punish a small evaluation set).

    Args:
        y_true: gold classes (N), names or ids as in ``labels``.
        y_pred: predicted classes (N).
        labels: every class, in the confusion matrix's row/column order (C).

    Returns:
        ``{"accuracy": float, "macro_f1": float, "confusion_matrix": C x C list of ints (rows:
        gold, columns: predicted), "labels": list}``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold classes but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    present = [c for c in labels if c in set(y_true) | set(y_pred)]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(labels)).tolist(),
        "labels": list(labels),
    }


def save_confusion(cm: Any, labels: Sequence[Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``confusion_matrix.csv`` (pandas) and ``confusion_matrix.png`` (matplotlib) to ``out_dir``.

    Args:
        cm: C x C counts, rows gold, columns predicted.
        labels: the C class names.
        out_dir: the folder to write into (created if needed).

    Returns:
        The paths of the CSV and the PNG.
    """
    import numpy as np
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(cm, dtype=int)
    names = [str(label) for label in labels]
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not fit {len(names)} labels")
    csv_path, png_path = out / "confusion_matrix.csv", out / "confusion_matrix.png"
    pd.DataFrame(matrix, index=pd.Index(names, name="gold"), columns=names).to_csv(csv_path)

    # A bare Figure on the Agg canvas: no pyplot state, no display, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = max(4.0, 0.45 * len(names) + 2)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > threshold else "black")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return csv_path, png_path
