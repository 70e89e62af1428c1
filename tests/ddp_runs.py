"""Multi-process runs that several test modules check, each launched once per session (once for all xdist
workers): a launch costs every process the torch + transformers import (about 7 CPU s) before it does
anything, so the tests assert their own parts of one run instead of each starting their own.

Imported as ``from tests.ddp_runs import ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The settings of the FUNSD demo runs compared across launchers: every run (one process with batch 4, two
#: processes with batch 2 each) validates every 2 steps on a carved validation split and keeps the best
#: checkpoint, so that the two-process run checks the shared validation and keep-best as well.
FUNSD_COMMON = ["--demo", "train.max_steps=6", "train.save_steps=100", "data.max_train_documents=8",
                "data.max_eval_documents=4", "train.learning_rate=1e-3", "model.dropout=0",
                "train.eval_steps=2", "train.keep=best", "data.val_fraction=0.3"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(name: str) -> str:
    """The console script ``name`` (torchrun, accelerate) installed beside this Python."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed beside this Python; install aetnet[test] in the test environment")
    return path


@dataclass(frozen=True)
class LaunchedRun:
    """What a launch left: its exit status, its output (stdout then stderr), its run folder and the
    AETNET_CACHE folder it used."""

    returncode: int
    output: str
    run: Path
    cache: Path


@contextlib.contextmanager
def _once_for_all_workers(name: str, tmp_path_factory):
    """The folder of ``name``, held under the session's lock: under xdist in the folder the workers share
    (the first worker launches, the others wait and read), else in this session's temporary folder."""
    from tests import conftest

    if conftest.SHARED is None:
        yield tmp_path_factory.getbasetemp() / name
        return
    with conftest._shared_lock(name):
        yield conftest.SHARED / name


def torchrun_funsd(tmp_path_factory, tiny_base: Path) -> LaunchedRun:
    """``torchrun --nproc_per_node 2 -m aetnet finetune funsd`` (gloo on CPU, batch 2 per process, the
    settings of :data:`FUNSD_COMMON`), with a fresh window cache beside the session's tiny base (the demo
    pages are written into it too). Launched once per session; read it, never write into it."""
    with _once_for_all_workers("torchrun-funsd", tmp_path_factory) as folder:
        done = folder / "launch.json"
        if not done.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            cache = folder / "cache"
            cache.mkdir()
            (cache / tiny_base.name).symlink_to(tiny_base, target_is_directory=True)
            cmd = [launcher("torchrun"), "--nproc_per_node", "2", "--master_addr",
                   "127.0.0.1", "--master_port", str(free_port()), "-m", "aetnet", "finetune", "funsd",
                   "--output", str(folder / "run"), "train.batch_size=2", *FUNSD_COMMON]
            proc = subprocess.run(cmd, cwd=folder, env={**os.environ, "AETNET_CACHE": str(cache)},
                                  capture_output=True, text=True, timeout=400)
            (folder / "output.txt").write_text(proc.stdout + proc.stderr)
            done.write_text(json.dumps({"returncode": proc.returncode}))
        return LaunchedRun(json.loads(done.read_text())["returncode"], (folder / "output.txt").read_text(),
                           folder / "run", folder / "cache")
