"""Two training processes (torchrun, accelerate; gloo on CPU) match one process with the same global batch.

The torchrun run is launched once per session (tests/ddp_runs.py: RVL-CDIP-format pages, a cold OCR cache) and
also checked by test_distributed_ocr and test_window_store; the one-process reference runs in the pytest process
(it is not what is tested), with the same settings, once per session for both launchers and test_distributed_ocr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.ddp_runs import free_port, one_process_rvl, rvl_args, rvl_pages, torchrun_rvl
from tests.ddp_runs import launcher as _launcher


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_base):
    """The session's one-process run (global batch 4; tests/ddp_runs.py), for both launchers' comparisons."""
    run = one_process_rvl(tmp_path_factory, tiny_base)
    assert run.returncode == 0
    return run


@pytest.fixture(scope="module")
def torchrun_two(tmp_path_factory, tiny_base):
    """The session's two-process torchrun run (tests/ddp_runs.py)."""
    return torchrun_rvl(tmp_path_factory, tiny_base)


def _per_step(log: list[dict], key: str) -> dict[int, float]:
    """``key`` (the training loss, the gradient norm) as logged at each step."""
    return {e["step"]: e[key] for e in log if key in e}


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(tmp_path, launcher, one_process, tiny_base, tmp_path_factory, request):
    if launcher == "torchrun":
        run = request.getfixturevalue("torchrun_two")
        assert run.returncode == 0, run.output[-3000:]
        two = run.metrics
        two_log = run.log
    else:
        # accelerate's --cpu runs ONE process (multi-CPU needs MPI); --multi_gpu is its torch.distributed
        # launcher and falls back to gloo on a machine without GPUs. Its OCR cache is a copy of the one-process
        # run's (warm: Tesseract is not what is compared), its window cache its own.
        shutil.copytree(one_process.cache / "ocr", tmp_path / "cache" / "ocr")
        launch = [_launcher("accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                  "--main_process_port", str(free_port())]
        _run([*launch, "-m", "aetnet", *rvl_args(rvl_pages(tmp_path_factory), tiny_base, tmp_path / "two", 2)],
             tmp_path, dict(os.environ, AETNET_CACHE=str(tmp_path / "cache")))
        two = json.loads((tmp_path / "two" / "metrics.json").read_text())
        two_log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    one = one_process.metrics
    # Same global batches in the same order; the losses differ only by per-process averaging.
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.05
    assert one["train_windows"] == two["train_windows"]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # The accuracy of 4 test pages is coarse, so each step is compared too. Every page is one window and both
    # processes hold 2 of them, so the mean of their losses is the loss of the 4 windows; the gradient norm is
    # that of the all-reduced gradient: both equal the one-process run's, up to float rounding.
    assert one["train_windows"] == one["train_documents"]
    for key in ("loss", "grad_norm"):
        ones, twos = _per_step(one_process.log, key), _per_step(two_log, key)
        assert sorted(ones) == sorted(twos) == [1, 2, 3, 4, 5, 6], key
        for step, value in ones.items():
            assert abs(value - twos[step]) <= 1e-3 * value, (key, step, ones, twos)


def test_two_processes_validate_keep_the_best_and_agree(torchrun_two):
    """torchrun, 2 processes: the validation windows are shared among them, every process finds the
    best checkpoint (no process falls back to the last weights), and the kept model is that checkpoint."""
    import torch
    from safetensors.torch import load_file

    assert torchrun_two.returncode == 0, torchrun_two.output[-3000:]
    assert "Could not locate the best model" not in torchrun_two.output
    run = torchrun_two.run
    metrics = torchrun_two.metrics
    assert metrics["world_size"] == 2 and metrics["best_step"] in (2, 4, 6)
    log = torchrun_two.log
    assert [e["step"] for e in log if "eval_accuracy" in e] == [2, 4, 6]  # logged once, by the main process
    kept = load_file(run / "model" / "model.safetensors")
    best = load_file(run / "checkpoints" / f"checkpoint-{metrics['best_step']}" / "model.safetensors")
    assert all(torch.equal(kept[k], best[k]) for k in kept)


def test_two_processes_run_the_aet_ema_once_per_optimizer_step(tmp_path):
    """torchrun, 2 processes, strategy aet with gradient accumulation 2: between the checkpoints of steps 1
    and 2 the momentum weights move by exactly one EMA step towards the step-2 online weights."""
    import torch
    from safetensors.torch import load_file

    m = 0.5
    port = str(free_port())
    # torch.distributed.run is torchrun, started with this very Python.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port, "-m", "aetnet", "finetune", "funsd", "--strategy", "aet", "--demo",
           "--output", str(tmp_path / "two"),
           "train.batch_size=1", "train.gradient_accumulation_steps=2", "train.max_steps=2", "train.save_steps=1",
           "train.learning_rate=0.01", "train.warmup_ratio=0", f"aet.momentum={m}", "aet.queue_size=8",
           "data.max_train_documents=4", "data.max_eval_documents=1", "data.max_length=64", "data.stride=16"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (load_file(str(tmp_path / "two" / "checkpoints" / f"checkpoint-{s}" / "model.safetensors"))
                     for s in (1, 2))
    pairs = [(f"{online}.{rest}", f"alignment.{online}_m.{rest}") for key in second
             for online in ("image_aligner", "text_aligner") if key.startswith(f"{online}.")
             for rest in [key[len(online) + 1:]]]
    pairs += [(key, key.replace("_proj.", "_proj_m.", 1)) for key in second
              if key.startswith(("alignment.vision_proj.", "alignment.text_proj."))]
    assert len(pairs) > 20
    moved = 0
    for online, momentum in pairs:
        expected = m * first[momentum].double() + (1 - m) * second[online].double()
        assert torch.allclose(second[momentum].double(), expected, rtol=0, atol=1e-6), momentum
        moved += not torch.allclose(second[momentum].double(), first[momentum].double(), rtol=0, atol=1e-4)
    assert moved > len(pairs) // 2  # the EMA step really moved the momentum weights
