"""relations.protocol (page | chunks | all-links): inspect counts on the real FUNSD sample against an
independent count straight from the JSON, the chunk rule and one-parent decoding on hand-worked cases,
and a page run's scores under both page and chunks from the same predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aetnet.config.settings import resolve_config
from aetnet.data.documents.relations import document_entities, encode_relation_documents, gold_links
from aetnet.errors import AetnetError


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from aetnet.data.encoding.processor import load_processor

    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


def _independent_counts(form: list[dict], tokenizer) -> dict[str, dict[str, int]]:
    """The LayoutXLM reference's chunking re-done from the JSON: entities in annotation order, each one's
    words tokenised as the tokenizer tokenises pre-split words (no special tokens), concatenated;
    512-token chunks; an entity belongs to chunk c when start and (exclusive) end are both in
    [512c, 512c + 512)."""
    words_of = {e["id"]: [w["text"] for w in e["words"] if str(w["text"]).strip()] for e in form}
    label = {e["id"]: e["label"] for e in form}
    offset, span = 0, {}
    for e in form:
        words = words_of[e["id"]]
        if not words:
            continue
        n = len(tokenizer.backend_tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False).ids)
        span[e["id"]] = (offset, offset + n)
        offset += n

    def chunk(i):
        start, end = span[i]
        index = start // 512 * 512
        return start // 512 if index <= end < index + 512 else None

    links = {frozenset((int(a), int(b))) for e in form for a, b in e["linking"]}
    reachable = [tuple(sorted(link)) for link in links if len(link) == 2 and all(i in span for i in link)]
    qa = [(a, b) for a, b in reachable if sorted((label[a], label[b])) == ["answer", "question"]]
    in_chunk = [(a, b) for a, b in qa if chunk(a) is not None and chunk(a) == chunk(b)]
    ents = list(span)
    questions = [i for i in ents if label[i] == "question"]
    answers = [i for i in ents if label[i] == "answer"]
    return {
        "page": {"gold_links": len(qa), "candidate_pairs": len(questions) * len(answers),
                 "unreachable_links": len(links) - len(reachable)},
        "chunks": {"gold_links": len(in_chunk),
                   "candidate_pairs": sum(1 for q in questions for a in answers
                                          if chunk(q) is not None and chunk(q) == chunk(a)),
                   "unreachable_links": len(links) - len(reachable) + len(qa) - len(in_chunk)},
        "all-links": {"gold_links": len(reachable), "candidate_pairs": len(ents) * (len(ents) - 1),
                      "unreachable_links": len(links) - len(reachable)},
    }


def test_inspect_counts_per_protocol_equal_an_independent_count(shared_data, tokenizer, capsys):
    from aetnet.cli.main import main

    root = shared_data / "funsd"
    assert main(["inspect", "funsd-re", "--data", str(root), "--base", "tiny", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    for split, folder in (("train", "training_data"), ("eval", "testing_data")):
        expected: dict[str, dict[str, int]] = {}
        for path in sorted((root / "dataset" / folder / "annotations").glob("*.json")):
            for name, counts in _independent_counts(json.loads(path.read_text())["form"], tokenizer).items():
                for key, value in counts.items():
                    expected.setdefault(name, {}).setdefault(key, 0)
                    expected[name][key] += value
        got = {name: {k: v for k, v in counts.items() if k in expected[name]}
               for name, counts in stats[split]["protocols"].items()}
        assert got == expected, split
        # the sample's long pages do lose links to chunk boundaries (the test can tell the protocols apart)
        assert expected["chunks"]["gold_links"] < expected["page"]["gold_links"] < expected["all-links"]["gold_links"]


def test_chunk_rule_hand_worked():
    from aetnet.data.documents.relation_protocols import STRADDLES, chunk_of

    assert chunk_of(0, 10) == 0
    assert chunk_of(500, 511) == 0
    assert chunk_of(505, 512) == STRADDLES  # last token is the chunk's last: the reference drops it (end exclusive)
    assert chunk_of(510, 515) == STRADDLES
    assert chunk_of(512, 520) == 1
    assert chunk_of(1030, 1040) == 2


def test_one_parent_keeps_the_best_parent_above_half():
    from aetnet.data.documents.relation_protocols import one_parent

    pairs = [(0, 2), (1, 2), (0, 1), (2, 0), (1, 3)]
    logits = np.array([0.5, 2.0, -0.1, 3.0, -5.0])
    # tail 2: parents 0 (0.5) and 1 (2.0) -> 1; tail 1: only logit < 0 -> none; tail 0: 2; tail 3: < 0
    assert [pairs[k] for k in one_parent(pairs, logits)] == [(1, 2), (2, 0)]


def test_all_links_direction_from_parent():
    from aetnet.data.documents.document import Document
    from aetnet.data.documents.relations import FUNSD_SCHEMA

    doc = Document(id="p", words=["Title", "Name:", "Ann", "x", "y"], boxes=[[0, 0, 1, 1]] * 5, page_size=(10, 10),
                   labels=["B-HEADER", "B-QUESTION", "B-ANSWER", "O", "O"], segment_ids=[0, 1, 2, 3, 4],
                   links=[(1, 0), (0, 1), (2, 1), (4, 3), (3, 4), (2, 9)])
    ents = document_entities(doc)
    from dataclasses import replace

    gold = gold_links(doc, ents, replace(FUNSD_SCHEMA, protocol="all-links"))
    # header -> question, question -> answer, other -> other in the direction first annotated (4, 3)
    assert gold.pairs == [(0, 1), (1, 2), (4, 3)] and gold.unreachable == 1 and gold.other == 0


def test_page_run_scores_page_and_chunks_from_the_same_predictions(shared_data, tokenizer):
    """Outputs built so that a chosen set of pairs has logit +1 and every other pair -1: the task's page
    and chunks scores equal those counted by hand from that set and the independent gold."""
    from aetnet.tasks.funsd import load_funsd
    from aetnet.tasks.funsd_re import FunsdRelationTask

    docs = load_funsd(str(shared_data / "funsd"))["eval"]
    cfg = resolve_config({}, {"task": "funsd-re", "data": {"path": str(shared_data / "funsd")}})
    task = FunsdRelationTask()
    task.use_protocol(cfg)
    windows = encode_relation_documents(docs, tokenizer, 512, 128, "segment", with_targets=False)
    rng = np.random.default_rng(0)
    predicted, tables = [], []
    tp = n_pred = n_gold = ctp = cpred = cgold = 0
    for doc in docs:
        form = json.loads(next((shared_data / "funsd" / "dataset" / "testing_data" / "annotations")
                               .glob(f"{doc.id}.json")).read_text())["form"]
        ents = document_entities(doc)
        index = {e.id: k for k, e in enumerate(ents)}
        counts = _independent_counts(form, tokenizer)
        gold = {(index[q], index[a]) for q, a in _qa_links(form) if q in index and a in index}
        questions = [k for k, e in enumerate(ents) if e.label == "QUESTION"]
        answers = [k for k, e in enumerate(ents) if e.label == "ANSWER"]
        wrong = {(q, a) for q in questions for a in answers if rng.random() < 0.05} - gold
        chosen = {p for p in gold if rng.random() < 0.7} | wrong
        predicted.append(chosen)
        table = np.zeros((len(ents), 2 * len(ents)))
        table[:, :len(ents)] = np.eye(len(ents))
        table[:, len(ents):] = -1.0
        for h, t in chosen:
            table[t, len(ents) + h] = 1.0
        tables.append(table)
        chunk_gold = _chunk_gold(form, tokenizer, index)
        in_chunk = _chunk_candidates(form, tokenizer, index)
        tp, n_pred, n_gold = tp + len(chosen & gold), n_pred + len(chosen), n_gold + len(gold)
        ctp += len(chosen & chunk_gold)
        cpred += len(chosen & in_chunk)
        cgold += len(chunk_gold)
        assert len(chunk_gold) == counts["chunks"]["gold_links"]
    outputs = [tables[w.doc_index][w.entity_index] for w in windows]
    metrics, _ = task.evaluate(docs, windows, outputs, {})
    f1 = 2 * tp / (n_pred + n_gold)
    cf1 = 2 * ctp / (cpred + cgold)
    assert (metrics["true_links"], metrics["predicted_links"], metrics["gold_links"]) == (tp, n_pred, n_gold)
    assert (metrics["chunks_true_links"], metrics["chunks_predicted_links"], metrics["chunks_gold_links"]) == \
        (ctp, cpred, cgold)
    assert metrics["f1"] == pytest.approx(f1) and metrics["chunks_f1"] == pytest.approx(cf1)
    assert cgold < n_gold and metrics["protocol"] == "page"


def _qa_links(form):
    label = {e["id"]: e["label"] for e in form}
    out = set()
    for e in form:
        for a, b in e["linking"]:
            if {label[a], label[b]} == {"question", "answer"}:
                out.add((a, b) if label[a] == "question" else (b, a))
    return out


def _spans(form, tokenizer):
    offset, span = 0, {}
    for e in form:
        words = [w["text"] for w in e["words"] if str(w["text"]).strip()]
        if words:
            n = len(tokenizer.backend_tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False).ids)
            span[e["id"]] = (offset, offset + n)
            offset += n
    return span


def _chunk(span, i):
    start, end = span[i]
    return start // 512 if end < (start // 512 + 1) * 512 else None


def _chunk_gold(form, tokenizer, index):
    span = _spans(form, tokenizer)
    return {(index[q], index[a]) for q, a in _qa_links(form) if q in span and a in span
            and _chunk(span, q) is not None and _chunk(span, q) == _chunk(span, a)}


def _chunk_candidates(form, tokenizer, index):
    span = _spans(form, tokenizer)
    label = {e["id"]: e["label"] for e in form}
    return {(index[q], index[a]) for q in span for a in span if label[q] == "question" and label[a] == "answer"
            and _chunk(span, q) is not None and _chunk(span, q) == _chunk(span, a)}


def test_protocol_setting_is_checked():
    with pytest.raises(AetnetError, match="relations.protocol"):
        resolve_config({}, {"task": "funsd-re"}, ["relations.protocol=pages"])
    with pytest.raises(AetnetError, match="relations.protocol applies"):
        resolve_config({}, {"task": "funsd"}, ["relations.protocol=chunks"])
    assert resolve_config({}, {"task": "funsd-re"}, ["relations.protocol=all-links"]).relations.protocol == "all-links"


def test_chunks_training_targets_stay_inside_chunks(shared_data, tokenizer):
    """Under chunks, no training target joins entities of two chunks or an entity that straddles."""
    from dataclasses import replace

    from aetnet.data.documents.relations import FUNSD_SCHEMA
    from aetnet.tasks.funsd import load_funsd

    docs = load_funsd(str(shared_data / "funsd"))["eval"]
    schema = replace(FUNSD_SCHEMA, protocol="chunks")
    page = encode_relation_documents(docs, tokenizer, 512, 128, "segment", schema=FUNSD_SCHEMA)
    chunked = encode_relation_documents(docs, tokenizer, 512, 128, "segment", schema=schema)
    dropped = 0
    for a, b in zip(page, chunked):
        for i, ci in enumerate(b.entity_chunks):
            for j, cj in enumerate(b.entity_chunks):
                if b.relation_labels[i][j] != -100:
                    assert ci == cj != -1
                dropped += a.relation_labels[i][j] == 1 and b.relation_labels[i][j] == -100
    assert dropped > 0


def test_published_recipe_budget():
    """funsd-re/full is the published LayoutXLM RE budget: effective batch 8 (on one process), lr 5e-5,
    2,500 steps."""
    import yaml

    from aetnet.config.recipes import find_recipe

    recipe = yaml.safe_load(find_recipe("funsd_re/full", "funsd-re", "full").read_text())
    train = recipe["train"]
    assert train["batch_size"] * train.get("gradient_accumulation_steps", 1) * 1 == 8
    assert (train["learning_rate"], train["max_steps"]) == (5e-5, 2500)


@pytest.mark.parametrize("protocol", ["chunks", "all-links"])
def test_protocol_runs_train_score_and_reload(aetnet_cache, shared_data, tmp_path, protocol, capsys):
    """A short run under each protocol: metrics.json counts that protocol's gold links (as inspect does),
    the model records the protocol, and evaluate on the saved model gives the same scores."""
    from aetnet.cli.main import main
    from aetnet.inference.evaluation import evaluate_model
    from aetnet.train.runner import finetune

    data = str(shared_data / "funsd")
    budget = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2", "data.max_eval_documents=6",
              "train.save_steps=2", f"relations.protocol={protocol}"]
    run = finetune("funsd-re", base="tiny", data=data, output=tmp_path / "run", overrides=budget)
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["inspect", "funsd-re", "--data", data, "--base", "tiny", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["eval"]["protocols"][protocol]
    assert metrics["protocol"] == protocol and "chunks_f1" not in metrics
    assert (metrics["gold_links"], metrics["candidate_pairs"]) == (counts["gold_links"], counts["candidate_pairs"])
    assert json.loads((run / "model" / "aetnet.json").read_text())["relations"]["protocol"] == protocol
    again = evaluate_model(run / "model", data, output=tmp_path / "again",
                           overrides=["data.max_eval_documents=6", f"relations.protocol={protocol}"])
    assert {k: again[k] for k in ("f1", "true_links", "predicted_links")} == \
        pytest.approx({k: metrics[k] for k in ("f1", "true_links", "predicted_links")})
    # An export (no config.yaml beside the model, as from the Hub) is scored by the protocol it records.
    from aetnet.export.folder import export_model

    exported = export_model(run, tmp_path / "export")
    from_export = evaluate_model(exported, data, output=tmp_path / "from-export",
                                 overrides=["data.max_eval_documents=6"])
    assert from_export["protocol"] == protocol
    assert {k: from_export[k] for k in ("f1", "gold_links", "candidate_pairs")} == \
        pytest.approx({k: metrics[k] for k in ("f1", "gold_links", "candidate_pairs")})


def test_all_links_pairs_link_only_the_token_models_entities(funsd_run, shared_data, tmp_path):
    """An all-links relation model makes every entity a candidate; the pairs of a token record must still join
    two of the record's entities (``key_entity``/``value_entity`` index ``entities``), never the line fragments
    of the words the token model left outside its entities."""
    from PIL import Image

    from aetnet.predict.pairs import PairPredictor
    from aetnet.predict.predictor import Predictor
    from aetnet.train.runner import finetune

    run = finetune("funsd-re", base="tiny", demo=True, output=tmp_path / "run",
                   overrides=["train.max_steps=1", "train.batch_size=2", "data.max_train_documents=2",
                              "data.max_eval_documents=1", "relations.protocol=all-links"])
    page = sorted((shared_data / "funsd" / "dataset" / "testing_data" / "images").glob("*.png"))[0]
    record = Predictor(funsd_run).predict_file(page)[0]
    covered = {i for e in record["entities"] for i in e["words"]}
    assert len(covered) < len(record["words"]), "every word is in an entity: the test could not tell"
    linker = PairPredictor(funsd_run, run / "model")
    scored = linker.score_pairs(Image.open(page).convert("RGB"), record)
    assert scored, "no candidate pair: the test could not tell"
    n = len(record["entities"])
    assert all(h.id < n and t.id < n for h, t, _ in scored)
