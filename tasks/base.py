"""What a task is: data in, windows, a LayoutLMv3 head, a metric.

Each task module (FUNSD, CORD, RVL-CDIP, DocVQA) subclasses one of the kinds here and adds only its
reader and label set. The runner, CLI and strategies talk to tasks through this interface alone.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np

from aetnet.config import RunConfig
from aetnet.data.document import Document
from aetnet.data.encoding import Window, encode_token_documents, merge_token_predictions
from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)


class Task:
    """Base class of all tasks.

    Attributes:
        name: registry key (``funsd``).
        kind: ``token``, ``sequence`` or ``qa``; selects the LayoutLMv3 head.
        metric: the headline metric key in ``metrics.json``.
    """

    name = ""
    kind = ""
    metric = ""

    def load(self, cfg: RunConfig, demo: bool = False) -> dict[str, list[Any]]:
        """Read the data: ``{"train": [...], "eval": [...]}`` (examples of the task's type)."""
        raise NotImplementedError

    def load_eval(self, path: str, cfg: RunConfig) -> list[Any]:
        """The evaluation split of the dataset at ``path`` (for ``aetnet evaluate``)."""
        cfg.data.path = path
        return self.load(cfg)["eval"]

    def label_list(self, splits: dict[str, list[Any]] | None = None) -> list[str]:
        """Label names, id order."""
        raise NotImplementedError

    def documents(self, examples: list[Any]) -> list[Document]:
        """The pages behind the examples (one per example)."""
        return list(examples)

    def encode(self, examples: list[Any], tokenizer, label2id: dict[str, int] | None, cfg: RunConfig) -> list[Window]:
        """Examples -> windows."""
        raise NotImplementedError

    def evaluate(
        self, examples: list[Any], windows: list[Window], outputs: Any, id2label: dict[int, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Model outputs for ``windows`` -> (metrics, one prediction record per example)."""
        raise NotImplementedError

    def statistics(self, splits: dict[str, list[Any]], tokenizer, cfg: RunConfig) -> dict[str, Any]:
        """Per split counts for ``aetnet inspect``."""
        raise NotImplementedError


class TokenClassificationTask(Task):
    """Word labelling with BIO tags and seqeval entity F1 (FUNSD, CORD)."""

    kind = "token"
    metric = "f1"
    labels: list[str] = []

    def label_list(self, splits=None) -> list[str]:
        return list(self.labels)

    def check_labels(self, examples: list[Document]) -> None:
        """Every word label must be known; the error names the document and the valid labels."""
        known = set(self.labels)
        for doc in examples:
            for label in doc.labels or []:
                if label not in known:
                    raise AetnetError(
                        f"{doc.source or doc.id}: unknown label '{label}'; valid labels are "
                        f"{', '.join(self.labels)}"
                    )

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig) -> list[Window]:
        return encode_token_documents(
            examples, tokenizer, label2id, cfg.data.max_length, cfg.data.stride, cfg.data.box_level
        )

    def evaluate(self, examples, windows, outputs, id2label):
        from aetnet.train.metrics import entity_scores

        logits = outputs
        merged = merge_token_predictions(windows, logits, [len(d.words) for d in examples])
        gold, pred, records = [], [], []
        for doc, scores in zip(examples, merged):
            labels, confidences = [], []
            for vec in scores:
                if vec is None:
                    labels.append("O")
                    confidences.append(0.0)
                    continue
                probs = _softmax(np.asarray(vec, dtype=np.float64))
                labels.append(id2label[int(probs.argmax())])
                confidences.append(float(probs.max()))
            gold_labels = list(doc.labels or [])
            if gold_labels:
                gold.append(gold_labels)
                pred.append(labels)
            records.append(
                {"id": doc.id, "words": doc.words, "gold": gold_labels, "pred": labels,
                 "scores": [round(c, 5) for c in confidences]}
            )
        metrics = entity_scores(gold, pred)
        return metrics, records

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, docs in splits.items():
            windows = self.encode(docs, tokenizer, None, cfg)
            per_doc = Counter(w.doc_index for w in windows)
            tokens = [
                len(tokenizer(d.words, boxes=[[0, 0, 0, 0]] * len(d.words))["input_ids"]) if d.words else 2
                for d in docs
            ]
            labels = Counter(label for d in docs for label in (d.labels or []))
            out[split] = {
                "documents": len(docs),
                "words": sum(len(d.words) for d in docs),
                "entities": sum(d.meta.get("entities", 0) for d in docs),
                "label_counts": dict(sorted(labels.items())),
                "max_tokens_per_document": max(tokens, default=0),
                "documents_needing_windows": sum(1 for n in per_doc.values() if n > 1),
                "windows": len(windows),
            }
        return out


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()

