"""What a task is: data in, windows, a LayoutLMv3 head, a metric.

Each task module (FUNSD, CORD, RVL-CDIP, DocVQA) subclasses one of the kinds here and adds only its
reader and label set. The runner, CLI and strategies talk to tasks through this interface alone.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
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
      :meth:`load`, :meth:`documents`, :meth:`encode`, :meth:`scorer` (a split is scored one document at
      a time: see :class:`Scorer`), :meth:`write_extras`;
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

    def scorer(self, id2label: dict[int, str]) -> Scorer:
        """A fresh :class:`Scorer` for one scoring of a split (each kind of task returns its own; a task
        that adds metrics returns a subclass of its kind's)."""
        raise NotImplementedError(f"task {self.name or type(self).__name__!r} defines no scorer(): return a "
                                  "Scorer subclass (see aetnet.tasks.base.Scorer)")

    def evaluate(
        self, examples: Sequence[Any], windows: Sequence[Window], outputs: Sequence[Any], id2label: dict[int, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Model outputs for ``windows`` -> (metrics, one prediction record per example), all at once.

        The same :meth:`scorer` as the streamed evaluation, fed the examples in order (for a small set
        already in memory, and tests); :mod:`aetnet.inference.evaluation` streams instead.
        """
        scorer = self.scorer(id2label)
        per_doc: list[list[int]] = [[] for _ in examples]
        for i, window in enumerate(windows):
            per_doc[window.doc_index].append(i)
        records = [scorer.add(example, local_windows([windows[i] for i in rows]), [outputs[i] for i in rows])
                   for example, rows in zip(examples, per_doc)]
        return scorer.metrics(), records

    def statistics(self, splits: dict[str, list[Any]], tokenizer, cfg: RunConfig) -> dict[str, Any]:
        """Per split counts for ``aetnet inspect``."""
        raise NotImplementedError

    def write_extras(self, folder: Path, metrics: dict[str, Any]) -> None:
        """Write task-specific files beside ``metrics.json`` (a confusion matrix, ...) from the metrics; default
        none (the prediction records were written as they came, to ``predictions.jsonl``)."""


class Scorer:
    """What a task keeps of a split while the split is scored one document at a time.

    The evaluation (:mod:`aetnet.inference.evaluation`) predicts the windows of a bounded chunk of documents,
    then calls :meth:`add` once per example, in order, with that example's windows and their outputs; the
    record it returns is written to ``predictions.jsonl`` at once and not kept. A scorer keeps only what its
    metric needs (label lists for seqeval, per-question ANLS values, link counts), and :meth:`metrics` gives
    the metrics of everything added. One scorer serves one scoring; :meth:`Task.scorer` makes a fresh one.

    Args:
        id2label: label names by id (empty for QA and relations).
    """

    def __init__(self, id2label: dict[int, str]) -> None:
        self.id2label = id2label

    def add(self, example: Any, windows: Sequence[Window], outputs: Sequence[Any]) -> dict[str, Any]:
        """Merge one example's ``windows`` (all of them, ``doc_index`` 0, in order) and their model
        ``outputs``; keep what the metric needs; return the example's prediction record."""
        raise NotImplementedError

    def metrics(self) -> dict[str, Any]:
        """The metrics of the examples added so far."""
        raise NotImplementedError


def local_windows(windows: Sequence[Window]) -> list[Window]:
    """One document's windows with ``doc_index`` 0 (what :meth:`Scorer.add` takes)."""
    return [w if w.doc_index == 0 else replace(w, doc_index=0) for w in windows]


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

    def scorer(self, id2label: dict[int, str]) -> TokenScorer:
        return TokenScorer(id2label)

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

    def write_extras(self, folder: Path, metrics: dict[str, Any]) -> None:
        """``confusion_matrix.csv`` and ``confusion_matrix.png`` beside ``metrics.json``."""
        from aetnet.metrics import save_confusion

        if metrics.get("confusion_matrix"):
            save_confusion(metrics["confusion_matrix"], self.label_list(), folder)

    def scorer(self, id2label: dict[int, str]) -> ClassScorer:
        return ClassScorer(id2label, self.score)

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

    def scorer(self, id2label: dict[int, str]) -> AnswerScorer:
        return AnswerScorer(id2label, self.max_answer_tokens)

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


# ------------------------------------------------------------------------------------------ scorers
class TokenScorer(Scorer):
    """Word labels: seqeval entity scores over the pages with gold labels; the record holds the words, gold
    and predicted labels and each word's confidence. Keeps the gold and predicted label lists."""

    def __init__(self, id2label: dict[int, str]) -> None:
        super().__init__(id2label)
        self.gold: list[list[str]] = []
        self.pred: list[list[str]] = []

    def add(self, example, windows, outputs):
        (scores,) = merge_token_predictions(windows, outputs, [len(example.words)])
        labels, confidences = word_predictions(scores, self.id2label)
        gold_labels = list(example.labels or [])
        if gold_labels:
            self.gold.append(gold_labels)
            self.pred.append(labels)
        return {"id": example.id, "words": example.words, "gold": gold_labels, "pred": labels,
                "scores": [round(c, 5) for c in confidences]}

    def metrics(self):
        from aetnet.metrics import entity_scores

        return entity_scores(self.gold, self.pred)


class ClassScorer(Scorer):
    """One class per page: softmax over the class logits (averaged over its windows, if several); keeps the
    gold and predicted class of each page with a gold class, scored by ``score(gold, pred)``."""

    def __init__(self, id2label: dict[int, str], score) -> None:
        super().__init__(id2label)
        self.score = score
        self.gold: list[str] = []
        self.pred: list[str] = []

    def add(self, example, windows, outputs):
        if not outputs:
            raise AetnetError(f"page {example.id!r} has no window to classify")
        summed: Any = 0
        for logits in outputs:
            summed = summed + np.asarray(logits, dtype=np.float64)
        probs = softmax(summed / len(outputs))
        label = self.id2label[int(probs.argmax())]
        if example.doc_label is not None:
            self.gold.append(example.doc_label)
            self.pred.append(label)
        return {"id": example.id, "gold": example.doc_label, "pred": label,
                "probs": {self.id2label[i]: round(float(p), 5) for i, p in enumerate(probs)}}

    def metrics(self):
        return self.score(self.gold, self.pred)


class AnswerScorer(Scorer):
    """Extractive QA: ANLS (threshold 0.5, best over gold answers) and exact match, averaged over the
    questions that have gold answers; a question without any gold answer is predicted but not scored.
    Keeps one ANLS and one exact-match value per scored question."""

    def __init__(self, id2label: dict[int, str], max_answer_tokens: int) -> None:
        super().__init__(id2label)
        self.max_answer_tokens = max_answer_tokens
        self.anls: list[float] = []
        self.exact: list[float] = []

    def add(self, example, windows, outputs):
        from aetnet.data.documents.answers import anls, exact_match

        (span,) = decode_spans(windows, outputs, 1, self.max_answer_tokens)
        words = example.document.words
        answer = " ".join(words[span.start_word: span.end_word + 1]) if span else ""
        if example.answers:
            self.anls.append(anls(answer, example.answers, threshold=0.5))
            self.exact.append(exact_match(answer, example.answers))
        return {
            "id": example.id, "question": example.question, "answer": answer,
            "score": round(span.score, 5) if span else None, "answers": example.answers,
            "word_span": [span.start_word, span.end_word] if span else None,
            "gold_span": list(example.answer_span) if example.answer_span else None,
        }

    def metrics(self):
        return {
            "anls": float(np.mean(self.anls)) if self.anls else 0.0,
            "exact_match": float(np.mean(self.exact)) if self.exact else 0.0,
            "scored_questions": len(self.anls),
        }
