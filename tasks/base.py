"""What a task is: data in, windows, a LayoutLMv3 head, a metric.

Each task module (FUNSD, CORD, RVL-CDIP, DocVQA) subclasses one of the kinds here and adds only its
reader and label set. The runner, CLI and strategies talk to tasks through this interface alone.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from aetnet.config.settings import RunConfig
from aetnet.data.documents.boxes import document_boxes
from aetnet.data.documents.document import Document, QAExample
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.encoding.key import WindowEncoder
from aetnet.data.encoding.qa import decode_spans, encode_qa_examples
from aetnet.data.encoding.windows import (
    Window,
    encode_token_documents,
    merge_token_predictions,
    softmax,
    word_boxes_of,
    word_predictions,
)
from aetnet.errors import AetnetError, DataError

logger = logging.getLogger(__name__)


class Task:
    """What a task is, and every hook aetnet calls on one.

    A task instance is stateless between runs except for what :meth:`load` learns from the data (a label
    set found in the pages, a relation schema); :meth:`data_state` hands that to the other processes of
    a node. Who calls what:

    - the runner (``aetnet finetune``, :mod:`aetnet.train.runner`): :meth:`load` with the run's
      bad-document policy, :meth:`documents`, :meth:`label_list`, :meth:`encode` (through the window
      cache), :attr:`kind` (the head), :meth:`data_state` / :meth:`adopt_data_state` (the hand-over
      to a node's other processes), :meth:`relation_meta` (saved in ``aetnet.json``),
      :meth:`write_extras`;
    - evaluation (validation during training, ``aetnet evaluate``, :mod:`aetnet.inference.evaluation`):
      :meth:`load`, :meth:`documents`, :meth:`encode`, :meth:`evaluate`, :meth:`write_extras`;
    - ``aetnet compare``: :attr:`metric` (the compared score);
    - ``aetnet inspect``: :meth:`load`, :meth:`documents`, :meth:`statistics`, :meth:`keep_known_labels`
      (through the readers); ``aetnet ocr``: :meth:`pages_to_recognise`.

    Model I/O, export, predict and serve do not call a task: a model folder's ``aetnet.json`` carries
    what they need (kind, labels, relations).

    Attributes:
        name: registry key (``funsd``).
        kind: ``token``, ``sequence``, ``qa`` or ``relation``; selects the LayoutLMv3 head.
        metric: the headline metric key in ``metrics.json``.
    """

    name = ""
    kind = ""
    metric = ""

    #: How words become tokens in training, recorded in a model folder's ``aetnet.json`` (``encoding``) so that
    #: prediction can tell: ``"words"`` (each word tokenised alone) or ``"xfund-entity-text"`` (XFUND: each
    #: entity's text tokenised whole, as the reference does).
    encoding = "words"

    def __init__(self, partial: bool = False) -> None:
        #: ``aetnet inspect`` builds its task with ``partial=True``: a reader reports the files that are there
        #: instead of failing on a missing split file (what ``finetune`` and ``evaluate`` need).
        self.partial = partial

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Any]]:
        """Read the data: ``{"train": [...], "eval": [...]}`` (examples of the task's type).

        Args:
            cfg: the run configuration (``data.*``).
            demo: read the embedded demo data instead of ``data.path``.
            bad_documents: the run's ``--on-bad-document`` policy; readers hand per-file errors to it
                (``None``: the first bad document raises its error).
        """
        raise NotImplementedError

    def label_list(self, splits: dict[str, list[Any]] | None = None) -> list[str] | None:
        """Label names, id order (``None`` for QA)."""
        raise NotImplementedError

    def data_state(self) -> dict[str, Any]:
        """What :meth:`load` learnt from the data and the task needs afterwards (for example a label set
        found in the pages), by field name; the runner hands it to the node's other processes, which
        read no document. Default: nothing (the task learns nothing)."""
        return {}

    def adopt_data_state(self, state: dict[str, Any]) -> None:
        """Take what another process's :meth:`load` learnt (:meth:`data_state`). Default: nothing."""

    def relation_meta(self) -> dict[str, Any] | None:
        """What a relation model's folder records for prediction (``aetnet.json``'s ``relations``: entity
        types, candidate rule, protocol); ``None`` (the default) for every other task."""
        return None

    def pages_to_recognise(self, cfg: RunConfig, demo: bool = False) -> list[tuple[str, Any]]:
        """``(page id, page)`` for every page of the dataset whose words come from Tesseract, in
        listing order, for ``aetnet ocr`` (pages are file paths or dataset rows, never pixels).

        Raises:
            AetnetError: the task's data ships its own words (nothing to recognise).
        """
        raise AetnetError(f"task '{self.name}' reads its words from its annotations; it needs no OCR "
                          "(aetnet ocr serves rvl-cdip and docvqa)")

    def labels_of(self, doc: Document) -> list[str]:
        """The label strings a document carries (word labels, its class, or none)."""
        return []

    def keep_known_labels(self, examples: list[Any], split: str,
                          bad_documents: BadDocuments | None = None) -> list[Any]:
        """The examples whose documents carry only the task's labels.

        A document with a label the task does not know is a bad document: one error naming it and the
        valid labels, or with ``--on-bad-document skip`` (``bad_documents``) a line in ``skipped.jsonl``
        (the others are kept).
        """
        names = self.label_list() or []
        known = set(names)
        kept = []
        for example, doc in zip(examples, self.documents(examples)):
            unknown = next((label for label in self.labels_of(doc) if label not in known), None)
            if unknown is None:
                kept.append(example)
                continue
            error = DataError(f"unknown label '{unknown}'; valid labels are {', '.join(names)}; correct the "
                              "label, or pass --on-bad-document skip to leave the document out", doc.source or doc.id)
            if bad_documents is None:
                raise error
            bad_documents.handle(error, split, doc.id, doc.source)
        return kept

    def documents(self, examples: list[Any]) -> list[Document]:
        """The pages behind the examples (one per example)."""
        return list(examples)

    def encode(self, examples: list[Any], tokenizer, label2id: dict[str, int] | None, cfg: RunConfig) -> list[Window]:
        """Examples -> windows."""
        raise NotImplementedError

    def window_encoder(self) -> WindowEncoder:
        """:meth:`encode` with what the window cache's fingerprint must know of it: the task's name and
        classes (their source is hashed); see :func:`aetnet.data.encoding.store.encode_cached`."""
        return WindowEncoder(self.encode, self.name, type(self))

    def evaluate(
        self, examples: list[Any], windows: list[Window], outputs: Any, id2label: dict[int, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Model outputs for ``windows`` -> (metrics, one prediction record per example)."""
        raise NotImplementedError

    def statistics(self, splits: dict[str, list[Any]], tokenizer, cfg: RunConfig) -> dict[str, Any]:
        """Per split counts for ``aetnet inspect``."""
        raise NotImplementedError

    def write_extras(self, folder: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """Write task-specific files beside ``metrics.json`` (a confusion matrix, ...); default none."""


class TokenClassificationTask(Task):
    """Word labelling with BIO tags and seqeval entity F1 (FUNSD, CORD)."""

    kind = "token"
    metric = "f1"
    labels: list[str] = []

    def label_list(self, splits=None) -> list[str]:
        return list(self.labels)

    def labels_of(self, doc: Document) -> list[str]:
        return list(doc.labels or [])

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig) -> list[Window]:
        return encode_token_documents(
            examples, tokenizer, label2id, cfg.data.max_length, cfg.data.stride, cfg.data.box_level
        )

    def evaluate(self, examples, windows, outputs, id2label):
        from aetnet.metrics import entity_scores

        logits = outputs
        merged = merge_token_predictions(windows, logits, [len(d.words) for d in examples])
        gold, pred, records = [], [], []
        for doc, scores in zip(examples, merged):
            labels, confidences = word_predictions(scores, id2label)
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
                _untruncated_tokens(tokenizer, d.words) if d.words else 2
                for d in docs
            ]
            labels = Counter(label for d in docs for label in (d.labels or []))
            out[split] = {
                "documents": len(docs),
                "words": sum(len(d.words) for d in docs),
                # words whose text is empty after stripping: dropped by the reader, as the reference does
                "empty_words_dropped": sum(d.meta.get("skipped_words", 0) for d in docs),
                "entities": sum(d.meta.get("entities", 0) for d in docs),
                "label_counts": dict(sorted(labels.items())),
                "max_tokens_per_document": max(tokens, default=0),
                "documents_needing_windows": sum(1 for n in per_doc.values() if n > 1),
                "windows": len(windows),
            }
        return out


def _untruncated_tokens(tokenizer, words: list[str]) -> int:
    """Tokens a page needs before windowing (counting more than the model takes is the point here)."""
    return len(tokenizer(words, boxes=[[0, 0, 0, 0]] * len(words), verbose=False)["input_ids"])


# ---------------------------------------------------------------------------------- classification
class SequenceClassificationTask(Task):
    """One class per page (RVL-CDIP): one window per document, accuracy first."""

    kind = "sequence"
    metric = "accuracy"
    labels: list[str] = []

    def label_list(self, splits=None) -> list[str]:
        return list(self.labels)

    def labels_of(self, doc: Document) -> list[str]:
        return [] if doc.doc_label is None else [doc.doc_label]

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig) -> list[Window]:
        """One window per page: its first ``max_length`` tokens (the page class needs no more).

        Labels are the class id (an int) when ``label2id`` is given and the page has a class.
        """
        windows = []
        for index, doc in enumerate(examples):
            label = label2id[doc.doc_label] if label2id is not None and doc.doc_label is not None else None
            if not doc.words:  # a blank page is still classified, from its image alone
                windows.append(Window(index, [tokenizer.cls_token_id, tokenizer.sep_token_id],
                                      [[0, 0, 0, 0]] * 2, [None, None], label, word_bbox=[[0, 0, 0, 0]] * 2))
                continue
            enc = tokenizer(doc.words, boxes=document_boxes(doc, cfg.data.box_level), truncation=True,
                            max_length=cfg.data.max_length, padding=False)
            word_ids = list(enc.word_ids())
            windows.append(Window(index, list(enc["input_ids"]), [list(b) for b in enc["bbox"]], word_ids,
                                  label, word_bbox=word_boxes_of(word_ids, document_boxes(doc, "word"))))
        return windows

    def score(self, gold: list[str], pred: list[str]) -> dict[str, Any]:
        """Accuracy, macro-F1 and the confusion matrix over :meth:`label_list` (rows gold, columns
        predicted); see :func:`aetnet.metrics.classification_metrics`."""
        from aetnet.metrics import classification_metrics

        if not gold:
            return {"accuracy": 0.0, "macro_f1": 0.0, "confusion_matrix": []}
        metrics = classification_metrics(gold, pred, self.label_list())
        metrics.pop("labels")  # the class order is the label list, saved with the model
        return metrics

    def write_extras(self, folder: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """``confusion_matrix.csv`` and ``confusion_matrix.png`` beside ``metrics.json``."""
        from aetnet.metrics import save_confusion

        if metrics.get("confusion_matrix"):
            save_confusion(metrics["confusion_matrix"], self.label_list(), folder)

    def evaluate(self, examples, windows, outputs, id2label):
        """Per page: softmax over the class logits (averaged over its windows, if several)."""
        summed: dict[int, np.ndarray] = {}
        counts: Counter = Counter()
        for window, logits in zip(windows, outputs):
            vec = np.asarray(logits, dtype=np.float64)
            summed[window.doc_index] = summed.get(window.doc_index, 0) + vec
            counts[window.doc_index] += 1
        gold, pred, records = [], [], []
        for index, doc in enumerate(examples):
            probs = softmax(summed[index] / counts[index])
            label = id2label[int(probs.argmax())]
            if doc.doc_label is not None:
                gold.append(doc.doc_label)
                pred.append(label)
            records.append({"id": doc.id, "gold": doc.doc_label, "pred": label,
                            "probs": {id2label[i]: round(float(p), 5) for i, p in enumerate(probs)}})
        return self.score(gold, pred), records

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, docs in splits.items():
            tokens = [_untruncated_tokens(tokenizer, d.words) if d.words else 2
                      for d in docs]
            out[split] = {
                "documents": len(docs),
                "words": sum(len(d.words) for d in docs),
                "documents_without_words": sum(1 for d in docs if not d.words),
                "label_counts": dict(sorted(Counter(d.doc_label for d in docs if d.doc_label).items())),
                "max_tokens_per_document": max(tokens, default=0),
                "documents_truncated": sum(1 for n in tokens if n > cfg.data.max_length),
            }
        return out


# --------------------------------------------------------------------------------------------- QA
class QuestionAnsweringTask(Task):
    """Extractive QA over a page's words (DocVQA): examples are :class:`QAExample`."""

    kind = "qa"
    metric = "anls"
    #: The longest answer decoded, in tokens.
    max_answer_tokens = 30

    def label_list(self, splits=None) -> None:
        """QA has no label set: the head predicts start and end positions (``None``)."""
        return None

    def documents(self, examples: list[QAExample]) -> list[Document]:
        return [ex.document for ex in examples]

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig) -> list[Window]:
        return encode_qa_examples(examples, tokenizer, cfg.data.max_length, cfg.data.stride)

    def evaluate(self, examples, windows, outputs, id2label):
        """ANLS (threshold 0.5, best over gold answers) and exact match, averaged over the questions
        that have gold answers; a question without any gold answer is predicted but not scored."""
        from aetnet.data.documents.answers import anls, exact_match

        spans = decode_spans(windows, outputs, len(examples), self.max_answer_tokens)
        records, anls_scores, em_scores = [], [], []
        for example, span in zip(examples, spans):
            words = example.document.words
            answer = " ".join(words[span.start_word: span.end_word + 1]) if span else ""
            if example.answers:
                anls_scores.append(anls(answer, example.answers, threshold=0.5))
                em_scores.append(exact_match(answer, example.answers))
            records.append({
                "id": example.id, "question": example.question, "answer": answer,
                "score": round(span.score, 5) if span else None, "answers": example.answers,
                "word_span": [span.start_word, span.end_word] if span else None,
                "gold_span": list(example.answer_span) if example.answer_span else None,
            })
        metrics = {
            "anls": float(np.mean(anls_scores)) if anls_scores else 0.0,
            "exact_match": float(np.mean(em_scores)) if em_scores else 0.0,
            "scored_questions": len(anls_scores),
        }
        return metrics, records

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, examples in splits.items():
            windows = self.encode(examples, tokenizer, None, cfg)
            per_example = Counter(w.doc_index for w in windows)
            located = sum(1 for ex in examples if ex.answer_span is not None)
            out[split] = {
                "questions": len(examples),
                "pages": len({id(ex.document) for ex in examples}),
                "located": located,
                "unlocated": len(examples) - located,
                "without_answers": sum(1 for ex in examples if not ex.answers),
                "max_window_tokens": max((len(w.input_ids) for w in windows), default=0),
                "examples_needing_windows": sum(1 for n in per_example.values() if n > 1),
                "windows": len(windows),
                "windows_with_answer": sum(1 for w in windows if w.start_positions),
            }
        return out
