"""Two training processes (torchrun, gloo on CPU) match one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

COMMON = ["--demo", "train.max_steps=6", "train.save_steps=100", "data.max_train_documents=8",
          "data.max_eval_documents=4", "train.learning_rate=1e-3", "model.dropout=0"]


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _launcher(name: str) -> str:
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed beside this Python; install aetnet[test] in the test environment")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The metrics of the one-process run (global batch 4), trained once for both launchers' comparisons."""
    cwd = tmp_path_factory.mktemp("one-process")
    _run([sys.executable, "-m", "aetnet", "finetune", "funsd", "--output", str(cwd / "one"), "train.batch_size=4",
          *COMMON], cwd)
    return json.loads((cwd / "one" / "metrics.json").read_text())


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(tmp_path, launcher, one_process):
    port = str(_free_port())
    if launcher == "torchrun":
        launch = [_launcher("torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port]
    else:
        # accelerate's --cpu runs ONE process (multi-CPU needs MPI); --multi_gpu is its torch.distributed
        # launcher and falls back to gloo on a machine without GPUs.
        launch = [_launcher("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port]
    _run([*launch, "-m", "aetnet", "finetune", "funsd", "--output", str(tmp_path / "two"), "train.batch_size=2",
          *COMMON], tmp_path)
    one = one_process
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # Same global batches in the same order; the losses differ only by per-process averaging.
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert abs(one["f1"] - two["f1"]) <= 0.05
    assert one["train_windows"] == two["train_windows"]
    assert (one["world_size"], two["world_size"]) == (1, 2)


def test_two_processes_validate_keep_the_best_and_agree(tmp_path):
    """torchrun, 2 processes: the validation windows are shared among them, every process finds the
    best checkpoint (no process falls back to the last weights), and the kept model is that checkpoint."""
    import torch
    from safetensors.torch import load_file

    port = str(_free_port())
    cmd = [_launcher("torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port,
           "-m", "aetnet", "finetune", "funsd", "--output", str(tmp_path / "two"), "train.batch_size=2",
           "train.eval_steps=2", "train.keep=best", "data.val_fraction=0.3", *COMMON]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Could not locate the best model" not in proc.stdout + proc.stderr
    run = tmp_path / "two"
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
    port = str(_free_port())
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
