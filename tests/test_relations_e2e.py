"""funsd-re end to end: finetune -> metrics -> evaluate (reload gives equal metrics) with every strategy
on the demo, and on the real FUNSD sample."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from aetnet.errors import AetnetError
from aetnet.inference.evaluation import evaluate_model
from aetnet.train.runner import finetune

BUDGET = ["train.max_steps=2", "train.batch_size=2", "train.logging_steps=1", "train.save_steps=2",
          "data.max_train_documents=4", "data.max_eval_documents=3", "aet.queue_size=4"]
KEYS = ("f1", "precision", "recall", "true_links", "predicted_links", "gold_links", "candidate_pairs")


def _check_run(run, evaluate_kwargs):
    metrics = json.loads((run / "metrics.json").read_text())
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == metrics["pages"] == 3
    assert metrics["gold_links"] == sum(len(r["gold"]) for r in records) > 0
    assert metrics["predicted_links"] == sum(len(r["pred"]) for r in records)
    assert metrics["true_links"] == sum(p["correct"] for r in records for p in r["pred"])
    again = evaluate_model(run / "model", **evaluate_kwargs, output=run / "again",
                           overrides=["data.max_eval_documents=3"])
    assert {k: again[k] for k in KEYS} == pytest.approx({k: metrics[k] for k in KEYS})
    assert (run / "again" / "predictions.jsonl").read_text() == (run / "predictions.jsonl").read_text()
    return metrics


@pytest.mark.parametrize("strategy", ["full", "head", "lora", "prompt", "aet", "aet-lora"])
def test_every_strategy_trains_evaluates_and_reloads(aetnet_cache, tmp_path, strategy):
    run = finetune("funsd-re", strategy=strategy, base="tiny", demo=True, output=tmp_path / "run",
                   overrides=BUDGET)
    metrics = _check_run(run, {"data": None, "demo": True})
    assert json.loads((run / "model" / "aetnet.json").read_text())["kind"] == "relation"
    if strategy in ("aet", "aet-lora"):
        assert metrics["trainable_parameters"] > 0


def test_real_funsd_sample(aetnet_cache, shared_data, tmp_path):
    data = str(shared_data / "funsd")
    run = finetune("funsd-re", base="tiny", data=data, output=tmp_path / "run", overrides=BUDGET)
    _check_run(run, {"data": data})


def test_compare_on_funsd_re(aetnet_cache, tmp_path):
    import pandas as pd

    from aetnet.cli.main import main

    out = tmp_path / "cmp"
    assert main(["compare", "funsd-re", "--strategies", "full,head", "--seeds", "1", "--base", "tiny", "--demo",
                 "--output", str(out), *BUDGET]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["strategy"]) == ["full", "head"]
    for _, row in runs.iterrows():  # each row carries its run's own F1
        metrics = json.loads((out / row["strategy"] / "seed0" / "metrics.json").read_text())
        assert row["f1"] == pytest.approx(metrics["f1"])
    assert (out / "results.csv").is_file()


def test_long_pages_pair_entities_across_windows(aetnet_cache, shared_data, tmp_path):
    """Real FUNSD pages cut into 64-token windows: every candidate pair is still scored."""
    data = str(shared_data / "funsd")
    run = finetune("funsd-re", base="tiny", data=data, output=tmp_path / "run", overrides=BUDGET)
    whole = json.loads((run / "metrics.json").read_text())
    cut = evaluate_model(run / "model", data, overrides=["data.max_eval_documents=3", "data.max_length=64",
                                                         "data.stride=16"])
    assert cut["pages_needing_windows"] == 3 and whole["pages_needing_windows"] < 3
    assert cut["candidate_pairs"] == whole["candidate_pairs"] > 0
    assert cut["gold_links"] == whole["gold_links"] and cut["unscored_pairs"] == 0


def _own_pages(folder, funsd_root):
    """The demo forms in the aetnet page format: KEY / VALUE / TITLE entities, [from, to] links."""
    names = {"question": "KEY", "answer": "VALUE", "header": "TITLE", "other": "O"}
    counts = {}
    for split, sub in (("train", "training_data"), ("test", "testing_data")):
        lines, cand, gold = [], 0, 0
        for ann in sorted((funsd_root / "dataset" / sub / "annotations").glob("*.json")):
            form = json.loads(ann.read_text())["form"]
            words, boxes, segments, labels = [], [], [], []
            for ent in form:
                for w in ent["words"]:
                    words.append(w["text"])
                    boxes.append(w["box"])
                    segments.append(ent["id"])
                    labels.append(names[ent["label"]])
            kinds = {e["id"]: names[e["label"]] for e in form if e["words"]}
            # a link to an entity without words names an id no word carries: pages.jsonl refuses it
            links = sorted({tuple(p) for e in form for p in e["linking"] if p[0] in kinds and p[1] in kinds
                            and p[0] != p[1]})
            n = {k: sum(1 for v in kinds.values() if v == k) for k in ("KEY", "VALUE", "TITLE")}
            cand += n["KEY"] * n["VALUE"] + n["TITLE"] * n["KEY"]
            gold += sum(1 for a, b in links if a in kinds and b in kinds)
            image = funsd_root / "dataset" / sub / "images" / f"{ann.stem}.png"
            lines.append(json.dumps({"id": ann.stem, "image": str(image), "words": words, "boxes": boxes,
                                     "segments": segments, "labels": labels, "links": [list(p) for p in links]}))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        counts[split] = (cand, gold)
    return counts


def test_own_pages_re_task(aetnet_cache, funsd_run, tmp_path):
    from aetnet.data.demo import ensure_demo
    from aetnet.predict.pairs import PairPredictor

    data = tmp_path / "pages"
    data.mkdir()
    counts = _own_pages(data, ensure_demo("funsd"))
    run = finetune("re", base="tiny", data=str(data), output=tmp_path / "run",
                   overrides=["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=4"])
    metrics = json.loads((run / "metrics.json").read_text())
    # links to the demo's unfilled answers (no words) are left out of the pages: none is unreachable
    assert metrics["unreachable_links"] == 0
    # every test page evaluated; candidates and gold counted independently from the JSON
    assert (metrics["candidate_pairs"], metrics["gold_links"]) == counts["test"]
    meta = json.loads((run / "model" / "aetnet.json").read_text())
    assert meta["labels"] == ["KEY", "TITLE", "VALUE", "OTHER"]
    assert meta["relations"]["rule"] == [["KEY", "VALUE"], ["TITLE", "KEY"]] and meta["relations"]["ordered"]
    again = evaluate_model(run / "model", str(data))
    assert {k: again[k] for k in KEYS} == pytest.approx({k: metrics[k] for k in KEYS})
    # predict applies the saved rule: a KEY and a VALUE entity make one candidate pair (the FUNSD token
    # model's QUESTION/ANSWER mapped onto them; unmapped, the combination is refused)
    record = {"words": [{"text": "Name:", "box": [10, 10, 50, 20]}, {"text": "Ann", "box": [60, 10, 90, 20]}],
              "entities": [{"type": "QUESTION", "words": [0], "box": [10, 10, 50, 20]},
                           {"type": "ANSWER", "words": [1], "box": [60, 10, 90, 20]}]}
    with pytest.raises(AetnetError, match="no pair could ever be found"):
        PairPredictor(funsd_run, run)
    scored = PairPredictor(funsd_run, run, entity_map={"QUESTION": "KEY", "ANSWER": "VALUE"}).score_pairs(
        Image.new("RGB", (200, 100), "white"), record)
    assert [(h.text, t.text) for h, t, _ in scored] == [("Name:", "Ann")]


def test_re_without_links_fails_clearly(aetnet_cache, tmp_path):

    page = {"id": "p", "words": ["Name:", "Ann"], "boxes": [[1, 1, 5, 5], [6, 1, 9, 5]], "width": 100,
            "height": 100, "labels": ["KEY", "VALUE"]}
    (tmp_path / "pages.jsonl").write_text("\n".join(json.dumps({**page, "id": f"p{i}"}) for i in range(4)) + "\n")
    with pytest.raises(AetnetError, match="no training page links"):
        finetune("re", base="tiny", data=str(tmp_path / "pages.jsonl"), output=tmp_path / "run",
                 overrides=["train.max_steps=1"])
