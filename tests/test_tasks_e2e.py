"""CORD, RVL-CDIP and DocVQA end to end through the CLI, and the QA windows/targets/decoding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aetnet.cli.main import main
from aetnet.data.documents.document import Document, QAExample
from aetnet.data.encoding.qa import decode_spans, encode_qa_examples
from aetnet.data.encoding.windows import Window

TINY_BUDGET = ["train.max_steps=3", "train.batch_size=2", "train.logging_steps=1", "train.save_steps=3",
               "data.max_train_documents=4", "data.max_eval_documents=3"]


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from aetnet.data.encoding.processor import load_processor

    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


# ------------------------------------------------------------------------------------ QA encoding
def _page(words: list[str]) -> Document:
    boxes = [[10 + 40 * (i % 10), 20 + 30 * (i // 10), 45 + 40 * (i % 10), 40 + 30 * (i // 10)]
             for i in range(len(words))]
    return Document(id="page", words=words, boxes=boxes, page_size=(500, 400), source="test-page")


FILLER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron".split()


def _qa_examples() -> tuple[list[str], list[QAExample]]:
    # Multi-subword answer words, surrounded by enough filler to need several windows.
    words = FILLER * 3 + ["Keystoneification", "Officeholders", "Productivity"] + FILLER * 3
    doc = _page(words)
    located = QAExample("q1", "Which company is mentioned?", doc, ["Keystoneification Officeholders Productivity"],
                        (36, 38))
    lost = QAExample("q2", "What is the total?", doc, ["$12.00"], None)
    return words, [located, lost]


def test_qa_targets_land_on_the_answer_subwords(tokenizer):
    words, examples = _qa_examples()
    windows = encode_qa_examples(examples, tokenizer, max_length=48, stride=12)
    located = [w for w in windows if w.doc_index == 0]
    assert len(located) >= 3  # the page needs several windows
    hits = 0
    for w in located:
        # Independent expectation: the whole answer is inside when every subword of its three words
        # (counted on a full, untruncated encoding of the page) lies in this window.
        inside = _whole_words_inside(w, tokenizer, words)
        if inside:
            hits += 1
            assert 0 < w.start_positions <= w.end_positions
            decoded = tokenizer.decode(w.input_ids[w.start_positions: w.end_positions + 1]).strip()
            assert decoded == "Keystoneification Officeholders Productivity"
        else:
            assert (w.start_positions, w.end_positions) == (0, 0)
    assert hits >= 1 and hits < len(located)
    assert all((w.start_positions, w.end_positions) == (0, 0) for w in windows if w.doc_index == 1)


def _whole_words_inside(window: Window, tokenizer, words: list[str]) -> bool:
    """Every subword of words 36..38 in the window (counted against a full, untruncated encoding)."""
    full = tokenizer(words, boxes=[[0, 0, 0, 0]] * len(words), add_special_tokens=False)
    counts = {k: full.word_ids().count(k) for k in (36, 37, 38)}
    return all(window.word_ids.count(k) == counts[k] for k in (36, 37, 38))


def test_qa_window_cut_inside_the_answer_points_to_cls(tokenizer):
    words, examples = _qa_examples()
    windows = encode_qa_examples(examples[:1], tokenizer, max_length=48, stride=12)
    cut = [w for w in windows if 0 < sum(1 for k in w.word_ids if k in (36, 37, 38))
           and not _whole_words_inside(w, tokenizer, words)]
    assert cut, "the windows should split the answer somewhere for this test to mean anything"
    for w in cut:
        assert (w.start_positions, w.end_positions) == (0, 0)


def test_question_tokens_have_zero_boxes_and_no_words(tokenizer):
    _, examples = _qa_examples()
    for w in encode_qa_examples(examples, tokenizer, max_length=48, stride=12):
        sep = w.input_ids.index(tokenizer.sep_token_id)
        question = tokenizer.decode(w.input_ids[1:sep]).strip()
        assert question == examples[w.doc_index].question
        for pos in range(sep + 1):
            assert w.bbox[pos] == [0, 0, 0, 0] and w.word_ids[pos] is None
        page = [pos for pos, word in enumerate(w.word_ids) if word is not None]
        assert page and all(w.bbox[p] != [0, 0, 0, 0] for p in page)
        # A page token carries its word's own normalised box (word level, 500x400 page).
        doc = examples[w.doc_index].document
        p = page[0]
        x0, y0, x1, y1 = doc.boxes[w.word_ids[p]]
        assert w.bbox[p] == [round(x0 * 2), round(y0 * 2.5), round(x1 * 2), round(y1 * 2.5)]


def test_decode_spans_matches_brute_force():
    rng = np.random.default_rng(0)
    # Two windows of example 0 (overlapping words 3-5) and one of example 1; positions 0-2 are
    # <s>, a question token and </s>, which may never be chosen.
    windows = [
        Window(0, [0] * 9, [[0] * 4] * 9, [None, None, None, 0, 1, 2, 3, 4, 5]),
        Window(0, [0] * 7, [[0] * 4] * 7, [None, None, None, 3, 4, 5, 6]),
        Window(1, [0] * 5, [[0] * 4] * 5, [None, None, None, 0, 0]),
    ]
    outputs = [(rng.normal(size=len(w.input_ids) + 2), rng.normal(size=len(w.input_ids) + 2)) for w in windows]
    outputs[0][0][0] = outputs[0][1][0] = 50.0  # a huge <s> score must not win
    got = decode_spans(windows, outputs, 2, max_answer_tokens=3)
    for example in (0, 1):
        best = None
        for w, (s, e) in zip(windows, outputs):
            if w.doc_index != example:
                continue
            page = [i for i, word in enumerate(w.word_ids) if word is not None]
            norm = [0, *page]  # <s> keeps its "no answer here" share of the mass
            ps = {i: math.exp(s[i]) / sum(math.exp(s[k]) for k in norm) for i in page}
            pe = {j: math.exp(e[j]) / sum(math.exp(e[k]) for k in norm) for j in page}
            for i in page:
                for j in page:
                    if 0 <= j - i < 3 and (best is None or ps[i] * pe[j] > best[0]):
                        best = (ps[i] * pe[j], w.word_ids[i], w.word_ids[j])
        assert got[example].score == pytest.approx(best[0])
        assert (got[example].start_word, got[example].end_word) == best[1:]


# ---------------------------------------------------------------------------------- split mapping
def test_map_splits_prefers_named_eval_then_carves_out_whole_pages():
    from types import SimpleNamespace as NS

    from aetnet.data.documents.splits import map_splits
    from aetnet.errors import AetnetError

    train, dev, test = [NS(id=f"t{i}") for i in range(5)], [NS(id="d0")], [NS(id="x0"), NS(id="x1")]
    out = map_splits({"train": train, "dev": dev, "test": test}, ("test", "dev"), 0.2, 0, "here")
    assert out["train"] == train and out["eval"] == test
    out = map_splits({"train": train, "dev": dev, "test": []}, ("test", "dev"), 0.2, 0, "here")
    assert out["eval"] == dev

    # One pool of 10 questions on 5 pages (2 each): 40% of the pages -> exactly 2 pages, 4 questions,
    # never a page on both sides; the same seed gives the same split, another seed may not.
    pool = [NS(id=f"q{i}", page=f"p{i // 2}") for i in range(10)]
    a = map_splits({"val_v1": pool}, ("val",), 0.4, 7, "here", group=lambda q: q.page)
    b = map_splits({"val_v1": pool}, ("val",), 0.4, 7, "here", group=lambda q: q.page)
    assert [q.id for q in a["eval"]] == [q.id for q in b["eval"]] and len(a["eval"]) == 4
    assert not {q.page for q in a["eval"]} & {q.page for q in a["train"]}
    assert len(a["train"]) + len(a["eval"]) == 10
    seeds = {tuple(q.id for q in map_splits({"train": pool}, ("val",), 0.4, s, "here",
                                            group=lambda q: q.page)["eval"]) for s in range(6)}
    assert len(seeds) > 1
    with pytest.raises(AetnetError, match="none named 'train'"):
        map_splits({"a": pool, "b": pool}, ("val",), 0.2, 0, "here")


# ------------------------------------------------------------------------------------- end to end
def _finetune(tmp_path, task: str, strategy: str = "full", extra: tuple[str, ...] = ()) -> tuple:
    run_dir = tmp_path / f"{task}-{strategy}"
    argv = ["finetune", task, "--demo", "--strategy", strategy, "--output", str(run_dir), *TINY_BUDGET, *extra]
    assert main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert metrics["eval_documents"] == len(records) == 3
    return run_dir, metrics, records


def _evaluate_again(run_dir, out, keys):
    assert main(["evaluate", str(run_dir / "model"), "--demo", "--output", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    first = json.loads((run_dir / "metrics.json").read_text())
    for key in keys:
        assert again[key] == first[key], key  # the same model on the same pages: identical numbers
    return again


def test_cord_full_demo(tmp_path):
    run_dir, metrics, records = _finetune(tmp_path, "cord")
    for key in ("precision", "recall", "f1", "per_label"):
        assert key in metrics
    assert metrics["eval_split"] == "test"  # which split was scored is recorded
    meta = json.loads((run_dir / "model" / "aetnet.json").read_text())
    assert meta["kind"] == "token" and len(meta["labels"]) == 61
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert len(config["id2label"]) == 61  # > 10 labels: LayoutLMv3's dense classification head
    for rec in records:
        assert len(rec["words"]) == len(rec["gold"]) == len(rec["pred"])
        assert set(rec["pred"]) <= set(meta["labels"])
    _evaluate_again(run_dir, tmp_path / "ev", ("precision", "recall", "f1", "eval_split"))


def test_rvl_cdip_full_demo(tmp_path, monkeypatch):
    from aetnet.tasks.rvl_cdip import RVL_CDIP_CLASSES

    # Tesseract's OpenMP threads only fight each other on a small shared machine (3x slower here).
    run_dir, metrics, records = _finetune(tmp_path, "rvl-cdip")
    assert {"accuracy", "macro_f1", "confusion_matrix"} <= set(metrics)
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (16, 16) and cm.sum() == 3
    # Accuracy and the confusion matrix agree with the records, counted here independently.
    correct = sum(1 for r in records if r["gold"] == r["pred"])
    assert metrics["accuracy"] == pytest.approx(correct / 3)
    for r in records:
        assert cm[RVL_CDIP_CLASSES.index(r["gold"]), RVL_CDIP_CLASSES.index(r["pred"])] >= 1
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-3) and len(r["probs"]) == 16
        assert r["probs"][r["pred"]] == pytest.approx(max(r["probs"].values()), abs=1e-5)  # rounded
    assert [r["gold"] for r in records] == ["letter", "form", "invoice"]  # test.txt order, ids official
    csv_rows = (run_dir / "confusion_matrix.csv").read_text().splitlines()
    assert len(csv_rows) == 17 and csv_rows[0].split(",")[1] == "letter"
    assert (run_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["ocr"] == {"lang": "eng", "psm": 3, "oem": None}
    _evaluate_again(run_dir, tmp_path / "ev", ("accuracy", "macro_f1", "confusion_matrix"))
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()


def test_docvqa_full_demo(tmp_path):
    from aetnet.data.documents.answers import anls, exact_match

    run_dir, metrics, records = _finetune(tmp_path, "docvqa")
    assert {"anls", "exact_match", "located", "unlocated", "questions"} <= set(metrics)
    assert metrics["questions"] == 3 and metrics["located"] + metrics["unlocated"] == 3
    assert json.loads((run_dir / "model" / "aetnet.json").read_text())["kind"] == "qa"
    # ANLS / EM recomputed from the records: the answer text is exactly the predicted words.
    assert metrics["anls"] == pytest.approx(np.mean([anls(r["answer"], r["answers"]) for r in records]))
    assert metrics["exact_match"] == pytest.approx(np.mean([exact_match(r["answer"], r["answers"])
                                                            for r in records]))
    for r in records:
        s, e = r["word_span"]
        assert 0 <= s <= e and r["question"] and r["answers"]
    _evaluate_again(run_dir, tmp_path / "ev", ("anls", "exact_match"))


def test_inspect_cord_demo_json(capsys):
    assert main(["inspect", "cord", "--demo", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == {"train", "eval", "base"}  # base: the tokenizer's base, its family and licence
    assert stats["train"]["documents"] > 0 and stats["eval"]["documents"] > 0
    counts = stats["train"]["label_counts"]
    assert sum(counts.values()) == stats["train"]["words"]
    assert stats["train"]["entities"] == sum(v for k, v in counts.items() if k.startswith("B-"))
    assert all(k == "O" or k[2:].split(".")[0] in ("menu", "sub_total", "total", "void_menu") for k in counts)


@pytest.mark.parametrize("task,metric", [("cord", "f1"), ("rvl-cdip", "accuracy"), ("docvqa", "anls")])
def test_aet_strategy_trains_every_task(tmp_path, monkeypatch, task, metric):
    run_dir, metrics, _ = _finetune(tmp_path, task, "aet", ("aet.queue_size=8",))
    assert metric in metrics and np.isfinite(metrics["train_loss"])
    state = json.loads(next((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert logged, "no training step was logged"
    # The task loss and every alignment term train, whatever the head (token, sequence, QA).
    for term in ("task_loss", "ditc_loss", "imc_loss", "glitc_loss", "pita_loss"):
        assert term in logged[0] and np.isfinite(logged[0][term]), term
    assert json.loads((run_dir / "model" / "aetnet.json").read_text())["strategy"] == "aet"
