"""Evaluation streams: a split is predicted a bounded chunk of documents at a time, and each document's record is
written as soon as it is scored (aetnet/inference/evaluation.py, the Scorer contract of tasks/base.py).

A stand-in model (logits read off the window's tokens) keeps these tests to a fraction of a second.
"""

from __future__ import annotations

import json
import math
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from aetnet.config.settings import resolve_config
from aetnet.data.documents.document import Document
from aetnet.data.encoding.windows import Window
from aetnet.inference import evaluation
from aetnet.inference.evaluation import EvalSet, records_file
from aetnet.predict.predictor import predict_paths
from aetnet.tasks.base import SequenceClassificationTask, TokenClassificationTask
from tests.helpers import page_record

CLASSES = ["a", "b", "c"]


class ThreeClasses(SequenceClassificationTask):
    name = "three-classes"
    labels = CLASSES


class Guesser(torch.nn.Module):
    """Class logits of a window: 2.0 for the class its token 1 names, 0 elsewhere; every forward is logged
    with the documents of its windows (token 2 holds 100 + the document index)."""

    def __init__(self, log: list) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.log = log

    def forward(self, input_ids, attention_mask, bbox):
        self.log.append(("forward", sorted({int(x) - 100 for x in input_ids[:, 2]})))
        return {"logits": torch.nn.functional.one_hot(input_ids[:, 1], len(CLASSES)).float() * 2.0 * self.w}


def _window(doc: int, guess: int) -> Window:
    return Window(doc, [0, guess, 100 + doc, 2], [[0, 0, 0, 0]] * 4, [None, 0, 0, None], None)


def _evalset(guesses: list[list[int]], gold: list[str | None], batch_size: int = 2) -> EvalSet:
    """An EvalSet of one page per entry of ``guesses`` (its windows' guessed classes) with class ``gold``."""
    docs = [Document(id=f"p{i}", words=["w"], boxes=[[0, 0, 1, 1]], page_size=(10, 10), doc_label=g)
            for i, g in enumerate(gold)]
    windows = [_window(i, guess) for i, doc_guesses in enumerate(guesses) for guess in doc_guesses]
    cfg = resolve_config({"task": "rvl-cdip"}, None, [f"train.eval_batch_size={batch_size}", "train.num_workers=0"])
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=1), image_processor=None)
    return EvalSet(ThreeClasses(), processor, docs, cfg, CLASSES, prepared=(windows, docs))


def test_records_are_written_while_the_split_is_predicted_one_chunk_at_a_time(monkeypatch):
    """20 pages (every third with two windows), chunks of 3 pages, batches of 2 windows: the first record is
    written before the last page is predicted, no more than a chunk (plus the batch read ahead) of pages is
    predicted and not yet written, and no more window outputs than one chunk's plus one batch are alive."""
    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 3)
    produced: list[weakref.ref] = []
    real_outputs = evaluation.window_outputs

    def tracked(kind, logits, lengths):
        outputs = real_outputs(kind, logits, lengths)
        produced.extend(weakref.ref(o) for o in outputs)
        return outputs

    monkeypatch.setattr(evaluation, "window_outputs", tracked)
    n = 20
    guesses = [[i % 3, (i + 1) % 3] if i % 3 == 0 else [i % 3] for i in range(n)]
    evalset = _evalset(guesses, [CLASSES[i % 3] for i in range(n)])
    log: list = []
    alive: list[int] = []

    def write(record):
        alive.append(sum(ref() is not None for ref in produced))
        log.append(("record", int(record["id"][1:])))

    evalset.score(Guesser(log), write)
    forwards = [i for i, (event, _) in enumerate(log) if event == "forward"]
    written = [doc for event, doc in log if event == "record"]
    assert written == list(range(n))  # every page, in order, once
    assert log.index(("record", 0)) < forwards[-1]  # written before the split was all predicted
    predicted: set[int] = set()
    for event, what in log:
        if event == "forward":
            predicted.update(what)
        else:
            done = written.index(what) + 1
            assert len(predicted) - done <= 3 + 1, log  # a chunk of pages, plus one read ahead in a batch of 2
    most_windows_in_a_chunk = max(sum(len(g) for g in guesses[a: a + 3]) for a in range(0, n, 3))
    assert max(alive) <= most_windows_in_a_chunk + 2


def test_the_streamed_metrics_and_records_match_a_hand_computation(tmp_path):
    """Four pages: p0's windows guess a and b (mean logits [1, 1, 0]: a tie, argmax takes a), p1 guesses b
    (gold b), p2 guesses c (gold a), p3 guesses c (no gold class: predicted, not scored).
    Scored: gold [a, b, a], predicted [a, b, c]: accuracy 2/3; F1 per class a 2/3 (precision 1, recall 1/2),
    b 1, c 0 (predicted once, never gold): macro-F1 (2/3 + 1 + 0) / 3 = 5/9."""
    evalset = _evalset([[0, 1], [1], [2], [2]], ["a", "b", "a", None], batch_size=3)
    with records_file(tmp_path / "predictions.jsonl") as write:
        metrics = evalset.score(Guesser([]), write)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx(5 / 9)
    assert metrics["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert not (tmp_path / "predictions.jsonl.partial").exists()
    assert [(r["id"], r["gold"], r["pred"]) for r in records] == [
        ("p0", "a", "a"), ("p1", "b", "b"), ("p2", "a", "c"), ("p3", None, "c")]
    tie = math.e / (2 * math.e + 1)  # softmax([1, 1, 0])
    sure = math.exp(2) / (math.exp(2) + 2)  # softmax([2, 0, 0]) of the guessed class
    assert records[0]["probs"] == pytest.approx({"a": tie, "b": tie, "c": 1 - 2 * tie}, abs=1e-5)
    assert records[3]["probs"] == pytest.approx({"a": (1 - sure) / 2, "b": (1 - sure) / 2, "c": sure}, abs=1e-5)


def test_a_failed_scoring_leaves_no_complete_looking_predictions_file(tmp_path):
    evalset = _evalset([[0], [1]], ["a", "b"])
    evalset.examples = evalset.examples[:1] + [None]  # the second page cannot be scored
    with pytest.raises(AttributeError), records_file(tmp_path / "predictions.jsonl") as write:
        evalset.score(Guesser([]), write)
    assert not (tmp_path / "predictions.jsonl").exists()
    assert len((tmp_path / "predictions.jsonl.partial").read_text().splitlines()) == 1  # p0 was written


class Tags(TokenClassificationTask):
    name = "tags"
    labels = ["O", "B-X", "I-X"]


def test_chunk_boundaries_do_not_change_token_predictions(monkeypatch):
    """Pages of 1 to 3 overlapping windows: scored one page a chunk and all pages in one chunk, the records and
    metrics are the same, and equal to the whole split scored at once (Task.evaluate)."""
    rng = np.random.default_rng(0)
    docs, windows = [], []
    for i in range(7):
        n_words = int(rng.integers(2, 9))
        labels = [["O", "B-X", "I-X"][int(k)] for k in rng.integers(0, 3, n_words)]
        docs.append(Document(id=f"d{i}", words=[f"w{k}" for k in range(n_words)], boxes=[[0, 0, 1, 1]] * n_words,
                             page_size=(10, 10), labels=labels))
        for start in range(0, n_words, 3):  # windows of up to 4 words, overlapping by one
            words = list(range(start, min(n_words, start + 4)))
            ids = [0] + [int(x) for x in rng.integers(3, 50, len(words))] + [2]
            windows.append(Window(i, ids, [[0, 0, 0, 0]] * len(ids), [None, *words, None], None))

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(50, 3)

        def forward(self, input_ids, attention_mask, bbox):
            return {"logits": self.table(input_ids)}

    torch.manual_seed(0)
    model = Noisy()
    cfg = resolve_config({"task": "funsd"}, None, ["train.eval_batch_size=3", "train.num_workers=0"])
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=1), image_processor=None)
    runs = []
    for chunk in (1, 100):
        monkeypatch.setattr(evaluation, "EVAL_CHUNK", chunk)
        records: list = []
        metrics = EvalSet(Tags(), processor, docs, cfg, Tags.labels, prepared=(windows, docs)).score(model,
                                                                                                      records.append)
        runs.append((metrics, records))
    assert runs[0] == runs[1]
    outputs = evaluation.predict_windows(model, EvalSet(Tags(), processor, docs, cfg, Tags.labels,
                                                        prepared=(windows, docs)).dataset, 3, "token", 1)
    assert Tags().evaluate(docs, windows, outputs, dict(enumerate(Tags.labels))) == (runs[0][0], runs[0][1])


class PageSpy:
    """Stands in for a Predictor over a pages file: predicting page k first reads what the output file holds."""

    def __init__(self, partial) -> None:
        self.partial, self.seen = partial, []

    def predict_words(self, image, words, boxes, question=None, segments=None):
        self.seen.append(self.partial.read_text().count('"id"') if self.partial.exists() else 0)
        return {"kind": "token", "words": list(words), "entities": []}


def test_predict_over_a_pages_file_writes_each_record_as_it_is_predicted(tmp_path):
    """Five pages: when page k is predicted, the k - 1 before it are already in the output file (as it is being
    written); the finished file is the JSON list of every record, and only what ``keep`` makes of a record stays."""
    Image.new("RGB", (200, 100), "white").save(tmp_path / "p.png")
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps(page_record("p.png", id=f"p{k}", labels=None)) + "\n" for k in range(5)))
    out = tmp_path / "out"
    spy = PageSpy(out / "pages.json.partial")
    results = predict_paths(spy, [pages], out, keep=lambda record: record["id"])
    assert spy.seen == [0, 1, 2, 3, 4]
    assert results == {str(pages): ["p0", "p1", "p2", "p3", "p4"]}
    written = json.loads((out / "pages.json").read_text())
    assert [(r["id"], r["page"], r["words"]) for r in written] == [(f"p{k}", k + 1, ["Total:", "12.00", "EUR"])
                                                                   for k in range(5)]
    assert (out / "pages.json").read_text() == json.dumps(written, indent=1, ensure_ascii=False)
