"""funsd-re end to end: finetune -> metrics -> evaluate (reload gives equal metrics) with every strategy
on the demo, and on the real FUNSD sample."""

from __future__ import annotations

import json

import pytest

from aetnet.train.runner import evaluate_model, finetune

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
