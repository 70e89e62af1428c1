"""Interrupted runs: a training process killed mid-way and resumed ends exactly where the
uninterrupted run ends; checkpoints are complete or absent; non-finite losses stop clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

# Two persistent DataLoader workers, dropout on, 6 steps over more than one epoch.
ARGS = ["finetune", "funsd", "--demo", "train.max_steps=6", "train.batch_size=2", "train.save_steps=2",
        "train.logging_steps=2", "data.max_train_documents=6", "data.max_eval_documents=3",
        "train.save_total_limit=3", "train.num_workers=2"]


def _cli(*args, **kw):
    # this process's thread count: the same arithmetic as the uninterrupted run made here
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    return subprocess.Popen([sys.executable, "-m", "aetnet", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def test_killed_run_resumes_to_the_same_result(tmp_path):
    from aetnet.cli.main import main

    # The uninterrupted reference run and the resumed run are made in this process (only the killed run needs a
    # process of its own).
    straight = tmp_path / "straight"
    assert main([*ARGS, "--output", str(straight)]) == 0

    killed = tmp_path / "killed"
    proc = _cli(*ARGS, "--output", str(killed))
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "checkpoint-2").is_dir():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before the kill; nothing was tested"
    done = sorted(p.name for p in (killed / "checkpoints").glob("checkpoint-*"))
    # Every checkpoint folder in place is complete (the trainer state is written last).
    for name in done:
        assert (killed / "checkpoints" / name / "trainer_state.json").is_file()

    assert main([*ARGS, "--output", str(killed), "--resume"]) == 0  # resumed here too

    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for key in ("f1", "precision", "recall", "per_label"):
        assert a[key] == b[key], key
    wa, wb = load_file(straight / "model" / "model.safetensors"), load_file(killed / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


def test_non_finite_loss_names_term_and_step(tmp_path):
    from aetnet.config.settings import RunConfig
    from aetnet.train.trainer import AetnetTrainer, NonFiniteLossError, training_arguments

    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            task = (self.w * x).mean()
            pita = task * float("nan")
            return {"loss": task + pita, "task_loss": task, "pita_loss": pita}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.tensor([float(i)])}

    cfg = RunConfig()
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.save_steps = 2, 2, 1
    trainer = AetnetTrainer(model=Exploding(), args=training_arguments(cfg, tmp_path), train_dataset=Data())
    with pytest.raises(NonFiniteLossError, match=r"the pita loss became nan at step 1"):
        trainer.train()
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_gradient_accumulation_divides_the_loss(tmp_path):
    """Batch 1 x 2 accumulation steps gives about the gradient of batch 2 (not twice it)."""
    from aetnet.train.runner import finetune

    def grad_norm(name, overrides):
        run = finetune("funsd", base="tiny", demo=True, output=tmp_path / name, overrides=[
            "train.max_steps=1", "train.logging_steps=1", "train.save_steps=1", "model.dropout=0",
            "data.max_train_documents=4", "data.max_eval_documents=1", *overrides])
        state = json.loads((run / "checkpoints" / "checkpoint-1" / "trainer_state.json").read_text())
        return next(e["grad_norm"] for e in state["log_history"] if "grad_norm" in e)

    together = grad_norm("b2", ["train.batch_size=2"])
    accumulated = grad_norm("ga2", ["train.batch_size=1", "train.gradient_accumulation_steps=2"])
    assert 0.75 < accumulated / together < 1.33, (accumulated, together)


def test_aet_resume_restores_queues_momentum_and_views(tmp_path):
    """Resuming AET from a mid-run checkpoint (at an epoch boundary) ends bit-for-bit where the
    uninterrupted run ends: weights, momentum copies, queues and their pointers."""
    import shutil

    from aetnet.train.runner import finetune

    overrides = ["train.max_steps=4", "train.save_steps=2", "train.batch_size=2", "train.logging_steps=2",
                 "data.max_train_documents=4", "data.max_eval_documents=2", "aet.queue_size=6",
                 "train.num_workers=2"]
    straight = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "a", overrides=overrides)
    resumed_dir = tmp_path / "b"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "checkpoint-2", resumed_dir / "checkpoints" / "checkpoint-2")
    resumed = finetune("funsd", strategy="aet", base="tiny", demo=True, output=resumed_dir, resume=True,
                       overrides=overrides)
    a = load_file(straight / "checkpoints" / "checkpoint-4" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "checkpoint-4" / "model.safetensors")
    assert a.keys() == b.keys()
    assert any("queue" in k for k in a) and any("_m." in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert ma["f1"] == mb["f1"]
