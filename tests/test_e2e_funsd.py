"""End to end through the CLI: finetune -> files -> evaluate gives the same metrics (demo and real sample)."""

from __future__ import annotations

import json

import pytest

from aetnet.cli.main import main

TINY_BUDGET = ["train.max_steps=4", "train.batch_size=2", "train.logging_steps=2", "train.save_steps=2"]


def _check_run(run_dir, n_eval_docs):
    for name in ("config.yaml", "metrics.json", "predictions.jsonl", "model/model.safetensors",
                 "model/config.json", "model/aetnet.json", "model/tokenizer.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("precision", "recall", "f1", "per_label", "trainable_parameters", "step_time_s"):
        assert key in metrics
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == n_eval_docs
    for line in lines:
        rec = json.loads(line)
        assert len(rec["words"]) == len(rec["gold"]) == len(rec["pred"])
    return metrics


def test_demo_finetune_then_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["finetune", "funsd", "--demo", "--output", str(run_dir), *TINY_BUDGET]) == 0
    from aetnet.data.demo import ensure_demo

    n_eval = len(list((ensure_demo("funsd") / "dataset/testing_data/annotations").glob("*.json")))
    metrics = _check_run(run_dir, n_eval)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir / "model"), "--demo", "--output", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("precision", "recall", "f1", "per_label"):
        assert again[key] == metrics[key]


def test_real_sample_finetune_then_evaluate(tmp_path, shared_data):
    run_dir = tmp_path / "real"
    data = str(shared_data / "funsd")
    assert main(["finetune", "funsd", "--base", "tiny", "--data", data, "--output", str(run_dir),
                 "--stride", "64", "data.max_length=256", *TINY_BUDGET]) == 0
    metrics = _check_run(run_dir, 6)
    assert json.loads((run_dir / "model/aetnet.json").read_text())["max_length"] == 256
    again = main(["evaluate", str(run_dir), "--data", data, "--output", str(tmp_path / "ev")])
    assert again == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["f1"] == metrics["f1"]


def test_resume_continues_from_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["finetune", "funsd", "--demo", "--output", str(run_dir), *TINY_BUDGET]) == 0
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
    # Asking for more steps with --resume continues from step 4 instead of starting over.
    assert main(["finetune", "funsd", "--demo", "--output", str(run_dir), "--resume",
                 *TINY_BUDGET, "train.max_steps=6"]) == 0
    state = json.loads((run_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [2, 4, 6]


def test_inspect_json(shared_data, capsys):
    assert main(["inspect", "funsd", "--data", str(shared_data / "funsd"), "--json", "data.max_length=128",
                 "data.stride=32"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["documents"] == 12 and stats["eval"]["documents"] == 6
    assert stats["eval"]["words"] + 0 == sum(sum(v for v in stats["eval"]["label_counts"].values()) for _ in [0])
    assert stats["train"]["max_tokens_per_document"] > 128
    assert stats["train"]["documents_needing_windows"] >= 1
    assert stats["train"]["label_counts"]["B-QUESTION"] > 0
    for split, folder in (("train", "training_data"), ("eval", "testing_data")):
        empty = sum(1 for f in (shared_data / "funsd" / "dataset" / folder / "annotations").glob("*.json")
                    for e in json.loads(f.read_text())["form"] for w in e["words"] if not w["text"].strip())
        assert stats[split]["empty_words_dropped"] == empty > 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["finetune", "funsd", "--data", "/nonexistent/funsd", "--base", "tiny"], "does not exist"),
        (["finetune", "nosuchtask", "--demo"], "unknown task 'nosuchtask'; choose one of"),
        (["finetune", "funsd", "--demo", "train.lr=1"], "unknown config key 'train.lr'"),
        (["finetune", "funsd", "--demo", "--strategy", "magic"], "unknown strategy 'magic'"),
        (["finetune", "funsd", "--data", "/tmp", "--base", "/nonexistent/base"], "could not load"),
        (["recipes", "show", "funsd/nothing"], "recipe 'funsd/nothing' not found"),
        # Offline (HF_HUB_OFFLINE=1 in conftest): hub ids fail at once with what to do instead.
        (["finetune", "funsd", "--demo", "--base", "microsoft/layoutlmv3-base"],
         "could not load the LayoutLMv3 processor from 'microsoft/layoutlmv3-base'.*--base tiny"),
        (["finetune", "funsd", "--base", "tiny"], "FUNSD could not be downloaded .*pass --data"),
        (["finetune", "funsd", "--base", "tiny", "--data", "someone/funsd-copy"],
         "could not load dataset 'someone/funsd-copy'.*pass --data"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_recipes_commands(tmp_path, capsys):
    assert main(["recipes", "ls"]) == 0
    assert "funsd/full" in capsys.readouterr().out.split()
    assert main(["recipes", "cp", "funsd/full", str(tmp_path / "r.yaml")]) == 0
    assert "learning_rate" in (tmp_path / "r.yaml").read_text()
