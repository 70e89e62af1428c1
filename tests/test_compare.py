"""``aetnet compare`` on the demo with the tiny base: the result files, their numbers against the
per-run metrics, resuming without re-running, and early failures."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from aetnet.compare.runs import compare
from aetnet.errors import AetnetError

STRATEGIES = ["lora", "prompt"]
SEEDS = 2
BUDGET = ["train.max_steps=2", "train.batch_size=2", "train.eval_batch_size=2", "train.save_steps=100",
          "train.logging_steps=1", "data.max_train_documents=2", "data.max_eval_documents=2",
          "data.max_length=128", "data.stride=32"]  # short windows: attention cost is quadratic


def run_compare(out: Path) -> Path:
    return compare("funsd", ",".join(STRATEGIES), seeds=SEEDS, base="tiny", demo=True, output=out,
                   overrides=BUDGET)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> Path:
    return run_compare(tmp_path_factory.mktemp("compare") / "out")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_metrics(out: Path) -> dict[str, list[dict]]:
    return {s: [json.loads((out / s / f"seed{k}" / "metrics.json").read_text()) for k in range(SEEDS)]
            for s in STRATEGIES}


def test_writes_results_with_one_row_per_strategy(comparison):
    for name in ("results.csv", "results.md", "results.png", "runs.csv"):
        assert (comparison / name).is_file(), name
    assert (comparison / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(comparison / "results.csv")
    assert [r["strategy"] for r in rows] == STRATEGIES
    assert [int(r["runs"]) for r in rows] == [SEEDS, SEEDS]
    runs = read_csv(comparison / "runs.csv")
    expected = [(s, k) for s in STRATEGIES for k in range(SEEDS)]
    assert [(r["strategy"], int(r["seed"])) for r in runs] == expected
    # Each run used its own seed (the resolved config is saved beside the run).
    for s in STRATEGIES:
        for k in range(SEEDS):
            assert f"seed: {k}\n" in (comparison / s / f"seed{k}" / "config.yaml").read_text()


def test_means_and_stds_match_the_run_metrics(comparison):
    rows = {r["strategy"]: r for r in read_csv(comparison / "results.csv")}
    md = (comparison / "results.md").read_text()
    for strategy, metrics in run_metrics(comparison).items():
        f1s = [m["f1"] for m in metrics]
        mean = sum(f1s) / len(f1s)
        std = (sum((x - mean) ** 2 for x in f1s) / (len(f1s) - 1)) ** 0.5
        row = rows[strategy]
        assert float(row["f1_mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["f1_std"]) == pytest.approx(std, abs=1e-12)
        assert std == pytest.approx(statistics.stdev(f1s), abs=1e-12)
        assert int(float(row["trainable_parameters"])) == metrics[0]["trainable_parameters"]
        assert int(float(row["total_parameters"])) == metrics[0]["total_parameters"]
        # Neither LoRA nor prompt tuning keeps training-only weights: an export holds them all.
        assert int(float(row["training_only_parameters"])) == 0 == metrics[0]["training_only_parameters"]
        assert int(float(row["inference_parameters"])) == metrics[0]["total_parameters"]
        step = sum(m["step_time_s"] for m in metrics) / len(metrics)
        assert float(row["step_time_s"]) == pytest.approx(step, rel=1e-9)
        assert float(row["peak_memory_mb"]) == max(m["peak_memory_mb"] for m in metrics)
        trainable = metrics[0]["trainable_parameters"]
        assert f"| {strategy} | {SEEDS} | {mean:.4f} ± {std:.4f} | {trainable:,} |" in md
    # LoRA (r=8 on query/value) and 20 prompts train different amounts: the table must show it.
    assert rows["lora"]["trainable_parameters"] != rows["prompt"]["trainable_parameters"]


def test_second_invocation_reruns_nothing_and_resumes_a_missing_run(comparison):
    files = sorted(comparison.glob("*/seed*/metrics.json"))
    assert len(files) == len(STRATEGIES) * SEEDS
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    models = {p: p.stat().st_mtime_ns for p in comparison.glob("*/seed*/model/*") if p.is_file()}
    run_compare(comparison)
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert {p: p.stat().st_mtime_ns for p in models} == models
    # An interrupted run (no metrics.json) is run again, and only that one.
    lost = comparison / "prompt" / "seed1" / "metrics.json"
    lost.unlink()
    run_compare(comparison)
    assert lost.is_file()
    kept = [p for p in files if p != lost]
    assert {p: p.stat().st_mtime_ns for p in kept} == {p: mtimes[p] for p in kept}


@pytest.mark.parametrize("names,bad", [("head,bogus", "bogus"), ("head,aet-loraa", "aet-loraa")])
def test_unknown_strategy_fails_before_anything_runs(tmp_path, names, bad):
    out = tmp_path / "cmp"
    with pytest.raises(AetnetError, match=rf"unknown strategy '{bad}'; choose one of: .*lora.*prompt"):
        compare("funsd", names, seeds=1, base="tiny", demo=True, output=out, overrides=BUDGET)
    assert not out.exists()


def test_cli_reports_unknown_strategy_and_bad_key(tmp_path, capsys):
    from aetnet.cli.main import main

    out = tmp_path / "cmp"
    assert main(["compare", "funsd", "--strategies", "head,nope", "--demo", "--output", str(out)]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
    argv = ["compare", "funsd", "--strategies", "head", "--demo", "--output", str(out), "train.nosuch=1"]
    assert main(argv) == 2
    assert "unknown config key 'train.nosuch'" in capsys.readouterr().err
    assert not out.exists()


def test_markdown_table_shows_inference_and_training_only_counts_and_dashes_for_old_runs():
    import pandas as pd

    from aetnet.compare.runs import markdown_table

    table = pd.DataFrame([
        {"strategy": "aet", "runs": 1, "f1_mean": 0.5, "f1_std": float("nan"), "trainable_parameters": 300,
         "trainable_percent": 60.0, "inference_parameters": 250, "training_only_parameters": 250,
         "total_parameters": 500, "step_time_s": 0.1, "peak_memory_mb": 10.0},
        {"strategy": "old", "runs": 1, "f1_mean": 0.5, "f1_std": float("nan"), "trainable_parameters": 1000,
         "trainable_percent": 100.0, "inference_parameters": float("nan"),
         "training_only_parameters": float("nan"), "total_parameters": 1000, "step_time_s": 0.1,
         "peak_memory_mb": 10.0},
    ])
    md = markdown_table(table, "f1")
    assert "| inference params | training-only params | total params |" in md
    assert "| aet | 1 | 0.5000 | 300 | 60.000 | 250 | 250 | 500 |" in md
    assert "| old | 1 | 0.5000 | 1,000 | 100.000 | - | - | 1,000 |" in md


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, tiny_base):
    """One ``--devices 0,1`` comparison (``full``, two seeds, validating every step) on RVL-CDIP-format pages
    with a cold OCR cache, Tesseract counted by a wrapper on PATH that logs each recognised image's SHA-256;
    then the same comparison run sequentially in this process. The two tests below check their parts of it
    (one launch of the worker processes for both)."""
    import os
    import shutil

    import torch

    from aetnet.data.demo import make_rvl_cdip_demo
    from tests.test_ocr_pool import WRAPPER

    tmp = tmp_path_factory.mktemp("parallel")
    data = make_rvl_cdip_demo(tmp / "rvl", n_per_class=1, n_eval_per_class=1)  # 4 train, 4 val, 4 test
    (tmp / "bin").mkdir()
    log = tmp / "tesseract.log"
    log.touch()
    real = shutil.which("tesseract")
    assert real, "tesseract is not installed"
    script = tmp / "bin" / "tesseract"
    script.write_text(WRAPPER.format(real=real, log=log))
    script.chmod(0o755)
    (tmp / "cache").mkdir()
    (tmp / "cache" / tiny_base.name).symlink_to(tiny_base)
    budget = ["train.max_steps=2", "train.batch_size=2", "train.eval_batch_size=2", "train.save_steps=100",
              "train.logging_steps=1", "data.max_length=128", "data.stride=32", "train.eval_steps=1",
              "train.keep=best"]
    kwargs = dict(seeds=2, base="tiny", data=str(data), overrides=budget)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}")
        mp.setenv("AETNET_CACHE", str(tmp / "cache"))
        mp.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # same arithmetic in the workers
        par = compare("rvl-cdip", "full", output=tmp / "par", devices="0,1", **kwargs)
        recognised = log.read_text().split()  # the images Tesseract was given (pytesseract's PNG copies)
        seq = compare("rvl-cdip", "full", output=tmp / "seq", **kwargs)
    return {"parallel": par, "sequential": seq, "data": data, "recognised": recognised,
            "recognised_after_sequential": log.read_text().split()}


def test_devices_run_in_parallel_processes_and_give_the_sequential_table(parallel):
    """--devices 0,1 (two CPU processes) runs the same queue of runs as the sequential comparison: same
    metrics, validation-selected steps and best validation scores, the same trained weights; the validation
    curves figure."""
    import torch
    from safetensors.torch import load_file

    sequential, parallel = parallel["sequential"], parallel["parallel"]
    assert sorted(p.name for p in (parallel / "logs").iterdir()) == ["full-seed0.log", "full-seed1.log"]
    columns = ["strategy", "seed", "accuracy", "best_step", "best_validation_accuracy", "trainable_parameters",
               "inference_parameters"]
    seq_rows, par_rows = read_csv(sequential / "runs.csv"), read_csv(parallel / "runs.csv")
    assert [{c: r[c] for c in columns} for r in seq_rows] == [{c: r[c] for c in columns} for r in par_rows]
    assert all(r["best_step"] in ("1.0", "2.0", "1", "2") for r in par_rows)
    seq_table, par_table = read_csv(sequential / "results.csv"), read_csv(parallel / "results.csv")
    for key in ("accuracy_mean", "accuracy_std", "best_step_mean", "best_validation_accuracy_mean"):
        assert seq_table[0][key] == par_table[0][key], key
    md = (parallel / "results.md").read_text()
    assert "val-selected step" in md and "best val accuracy" in md
    best = [json.loads((parallel / "full" / f"seed{k}" / "metrics.json").read_text())["best_validation_accuracy"]
            for k in range(2)]
    assert float(par_table[0]["best_validation_accuracy_mean"]) == pytest.approx(statistics.mean(best))
    assert (parallel / "validation.png").stat().st_size > 5_000
    for k in range(2):  # the models themselves, not only their scores on a few pages
        a = load_file(sequential / "full" / f"seed{k}" / "model" / "model.safetensors")
        b = load_file(parallel / "full" / f"seed{k}" / "model" / "model.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_bad_devices_are_refused():
    from aetnet.compare.devices import parse_devices

    assert parse_devices("0, 1") == ["0", "1"]
    for bad in ("", "0,0"):
        with pytest.raises(AetnetError, match="--devices"):
            parse_devices(bad)


def test_a_failed_parallel_run_is_named_with_its_log(tmp_path):
    failed = r"1 comparison run\(s\) failed: .*full/seed0 \(exit \d+; see .*full-seed0.log"
    with pytest.raises(AetnetError, match=failed):
        compare("funsd", "full", seeds=1, base="tiny", data=str(tmp_path / "missing"), output=tmp_path / "out",
                devices="0", overrides=BUDGET)
    assert "missing" in (tmp_path / "out" / "logs" / "full-seed0.log").read_text()


def test_parallel_runs_find_every_page_recognised_once(parallel):
    """--devices 0,1 on RVL-CDIP-format pages with a cold OCR cache: the pages are recognised once, in the
    OCR pool, before the runs start; the two parallel runs read them all from the cache (each page given
    to Tesseract exactly once, counted by a wrapper on PATH that logs each recognised image's SHA-256)."""
    pages = sorted(p for p in (parallel["data"] / "images").rglob("*.tif"))
    hashes = parallel["recognised"]
    assert len(pages) == 12 and len(set(hashes)) == 12, (len(hashes), len(set(hashes)))
    assert len(hashes) == 12, "a page was given to Tesseract more than once"
    assert len(read_csv(parallel["parallel"] / "runs.csv")) == 2
    # the sequential comparison afterwards (same cache) recognised nothing either
    assert parallel["recognised_after_sequential"] == hashes
