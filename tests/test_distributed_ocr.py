"""Two training processes (torchrun, gloo) on RVL-CDIP-format pages with a cold OCR cache: every page is
given to Tesseract once (the node's main process prepares the data, the other waits and reads the
cache), and the metrics equal a one-process run.

Tesseract runs are counted by a wrapper on PATH that logs the SHA-256 of each recognised page image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from aetnet.data.demo import make_rvl_cdip_demo
from tests.test_distributed_train import _free_port
from tests.test_ocr_pool import WRAPPER

COMMON = ["train.max_steps=4", "train.save_steps=100", "train.learning_rate=1e-3", "model.dropout=0",
          "train.logging_steps=1"]


def _env(tmp_path, name: str, log) -> dict[str, str]:
    cache = tmp_path / f"cache-{name}"
    cache.mkdir()
    return dict(os.environ, AETNET_CACHE=str(cache), PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
                OMP_NUM_THREADS="1")


def test_torchrun_recognises_each_page_once_and_matches_one_process(tmp_path, tiny_base):
    data = make_rvl_cdip_demo(tmp_path / "rvl", n_per_class=2, n_eval_per_class=1)  # 8 train, 4 test pages
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "tesseract"
    real = shutil.which("tesseract")
    assert real, "tesseract is not installed"
    base = str(tiny_base / "layoutlmv3")
    outcomes = {}
    for name, launch, batch in (
        ("one", [sys.executable, "-m", "aetnet"], "train.batch_size=4"),
        # torchrun, run by this Python (the console script may belong to another environment)
        ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                 "127.0.0.1", "--master_port", str(_free_port()), "-m", "aetnet"], "train.batch_size=2"),
    ):
        log = tmp_path / f"tesseract-{name}.log"
        log.touch()
        script.write_text(WRAPPER.format(real=real, log=log))
        script.chmod(0o755)
        cmd = [*launch, "finetune", "rvl-cdip", "--data", str(data), "--base", base, "--output",
               str(tmp_path / name), batch, *COMMON]
        proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path, name, log), capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outcomes[name] = (log.read_text().split(), json.loads((tmp_path / name / "metrics.json").read_text()))
    for name, (hashes, _) in outcomes.items():
        assert len(hashes) == 12 and len(set(hashes)) == 12, (name, len(hashes), len(set(hashes)))
    one, two = outcomes["one"][1], outcomes["two"][1]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["train_documents"] == two["train_documents"] == 8
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert one["accuracy"] == pytest.approx(two["accuracy"])
