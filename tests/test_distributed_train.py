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


def test_torchrun_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.fail("torchrun is not installed beside this Python; install torch in the test environment")
    _run([sys.executable, "-m", "aetnet", "finetune", "funsd", "--output", str(tmp_path / "one"),
          "train.batch_size=4", *COMMON], tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
          "-m", "aetnet", "finetune", "funsd",
          "--output", str(tmp_path / "two"), "train.batch_size=2", *COMMON], tmp_path)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # Same global batches in the same order; the losses differ only by per-process averaging.
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert abs(one["f1"] - two["f1"]) <= 0.05
    assert one["train_windows"] == two["train_windows"]
