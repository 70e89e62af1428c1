"""Two training processes (torchrun, accelerate; gloo on CPU) match one process with the same global batch.

The torchrun run is launched once per session (tests/ddp_runs.py) and also checked by test_window_store; the
one-process reference runs in this process (it is not what is tested), with the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.ddp_runs import FUNSD_COMMON, free_port, torchrun_funsd
from tests.ddp_runs import launcher as _launcher

COMMON = FUNSD_COMMON
_free_port = free_port  # imported by test_distributed_ocr


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The metrics of the one-process run (global batch 4), trained once, in this process, for both launchers'
    comparisons."""
    from aetnet.cli.main import main

    out = tmp_path_factory.mktemp("one-process") / "one"
    assert main(["finetune", "funsd", "--output", str(out), "train.batch_size=4", *COMMON]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def torchrun_two(tmp_path_factory, tiny_base):
    """The session's two-process torchrun run (tests/ddp_runs.py)."""
    return torchrun_funsd(tmp_path_factory, tiny_base)


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(tmp_path, launcher, one_process, request):
    if launcher == "torchrun":
        run = request.getfixturevalue("torchrun_two")
        assert run.returncode == 0, run.output[-3000:]
        two = json.loads((run.run / "metrics.json").read_text())
    else:
        # accelerate's --cpu runs ONE process (multi-CPU needs MPI); --multi_gpu is its torch.distributed
        # launcher and falls back to gloo on a machine without GPUs.
        launch = [_launcher("accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                  "--main_process_port", str(free_port())]
        _run([*launch, "-m", "aetnet", "finetune", "funsd", "--output", str(tmp_path / "two"), "train.batch_size=2",
              *COMMON], tmp_path)
        two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = one_process
    # Same global batches in the same order; the losses differ only by per-process averaging.
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert abs(one["f1"] - two["f1"]) <= 0.05
    assert one["train_windows"] == two["train_windows"]
    assert (one["world_size"], two["world_size"]) == (1, 2)


def test_two_processes_validate_keep_the_best_and_agree(torchrun_two):
    """torchrun, 2 processes: the validation windows are shared among them, every process finds the
    best checkpoint (no process falls back to the last weights), and the kept model is that checkpoint."""
    import torch
    from safetensors.torch import load_file

    assert torchrun_two.returncode == 0, torchrun_two.output[-3000:]
    assert "Could not locate the best model" not in torchrun_two.output
    run = torchrun_two.run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["best_step"] in (2, 4, 6)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "eval_f1" in e] == [2, 4, 6]  # logged once, by the main process
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
