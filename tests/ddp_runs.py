"""Multi-process runs that several test modules check, each launched once per session (once for all xdist
workers): a launch costs every process the torch + transformers import (about 7 CPU s) before it does
anything, so the tests assert their own parts of one run instead of each starting their own.

The session's two-process run is ``torchrun ... finetune rvl-cdip`` on RVL-CDIP-format pages with a cold OCR
cache, the Tesseract runs counted by a wrapper on PATH and the Documents each process builds counted by a
``sitecustomize`` (:func:`torchrun_rvl`). It is compared with one one-process run in the pytest process, counted
the same way (:func:`one_process_rvl`). Checked by test_distributed_train (matches one process; validation
shared, best checkpoint kept), test_distributed_ocr (each page recognised once, by one process) and
test_window_store (windows built once per node).

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

#: The settings of the RVL-CDIP runs compared across launchers (one process with batch 4, two processes with
#: batch 2 each, on :func:`rvl_pages`): every run logs each step's loss, validates every 2 steps on the pages'
#: val split and keeps the best checkpoint, so that the two-process run checks the shared validation and
#: keep-best as well.
RVL_COMMON = ["train.max_steps=6", "train.save_steps=100", "train.learning_rate=1e-3", "model.dropout=0",
              "train.logging_steps=1", "train.eval_steps=2", "train.keep=best"]

#: Imported by every Python process of the torchrun run (PYTHONPATH): counts the Documents each training process
#: builds.
SITECUSTOMIZE = """
import atexit, os
if "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ:
    from aetnet.data.documents import document
    _built = [0]
    _init = document.Document.__post_init__
    def _counted(self):
        _built[0] += 1
        _init(self)
    document.Document.__post_init__ = _counted
    def _write():  # written whole or not at all (pool workers may be terminated while exiting)
        path = os.path.join({folder!r}, "rank%s-pid%d" % (os.environ.get("RANK", "0"), os.getpid()))
        with open(path + ".tmp", "w") as f:
            f.write(str(_built[0]))
        os.replace(path + ".tmp", path)
    atexit.register(_write)
"""


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
class CountedRun:
    """What a counted RVL-CDIP run left: its exit status, its output (stdout then stderr; empty for the
    in-process run), its run folder, the AETNET_CACHE folder it used (cold when it started), the SHA-256 of
    each page image Tesseract recognised (one line per run of Tesseract) and the Documents built per rank
    (``rank0``, ``rank1``: summed over the rank's processes)."""

    returncode: int
    output: str
    run: Path
    cache: Path
    tesseract: list[str]
    documents: dict[str, int]

    @property
    def metrics(self) -> dict:
        return json.loads((self.run / "metrics.json").read_text())

    @property
    def log(self) -> list[dict]:
        return [json.loads(line) for line in (self.run / "log.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def _once_for_all_workers(name: str, tmp_path_factory):
    """The folder of ``name``, held under the session's lock: under xdist in the folder the workers share
    (the first worker builds, the others wait and read), else in this session's temporary folder."""
    from tests import conftest

    if conftest.SHARED is None:
        yield tmp_path_factory.getbasetemp() / name
        return
    with conftest._shared_lock(name):
        yield conftest.SHARED / name


def rvl_pages(tmp_path_factory) -> Path:
    """RVL-CDIP-format pages (:func:`~aetnet.data.demo.make_rvl_cdip_demo`, 4 classes): 8 training, 4 val and
    4 test pages, written once per session."""
    from aetnet.data.demo import make_rvl_cdip_demo

    with _once_for_all_workers("rvl-pages", tmp_path_factory) as folder:
        if not (folder / "labels" / "test.txt").is_file():
            make_rvl_cdip_demo(folder, n_per_class=2, n_eval_per_class=1)
        return folder


def _counting(folder: Path) -> tuple[dict[str, str], Path, Path]:
    """A cold cache, the Tesseract wrapper (first on PATH) and the Document counter (``sitecustomize`` on
    PYTHONPATH) in ``folder``: ``(environment, Tesseract log, Documents folder)``."""
    from tests.test_ocr_pool import WRAPPER

    real = shutil.which("tesseract")
    assert real, "tesseract is not installed"
    for sub in ("cache", "bin", "site", "documents"):
        (folder / sub).mkdir(parents=True)
    log = folder / "tesseract.log"
    log.touch()
    script = folder / "bin" / "tesseract"
    script.write_text(WRAPPER.format(real=real, log=log))
    script.chmod(0o755)
    (folder / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE.format(folder=str(folder / "documents")))
    env = dict(os.environ, AETNET_CACHE=str(folder / "cache"), PATH=f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", PYTHONPATH=f"{folder / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return env, log, folder / "documents"


def _documents_built(folder: Path) -> dict[str, int]:
    """Documents built per rank (summed over the rank's processes: DataLoader workers build none)."""
    counts: dict[str, int] = {}
    for f in folder.iterdir():
        if f.suffix == ".tmp":
            continue
        rank = f.name.split("-")[0]
        counts[rank] = counts.get(rank, 0) + int(f.read_text())
    return counts


def _finished(folder: Path) -> CountedRun:
    done = json.loads((folder / "launch.json").read_text())
    return CountedRun(done["returncode"], (folder / "output.txt").read_text(), folder / "run", folder / "cache",
                      (folder / "tesseract.log").read_text().split(), _documents_built(folder / "documents"))


def rvl_args(pages: Path, tiny_base: Path, output: Path, batch_size: int) -> list[str]:
    """``finetune rvl-cdip`` on ``pages`` with the settings of :data:`RVL_COMMON`."""
    return ["finetune", "rvl-cdip", "--data", str(pages), "--base", str(tiny_base / "layoutlmv3"),
            "--output", str(output), f"train.batch_size={batch_size}", *RVL_COMMON]


def torchrun_rvl(tmp_path_factory, tiny_base: Path) -> CountedRun:
    """``torchrun --nproc_per_node 2 -m aetnet finetune rvl-cdip`` (gloo on CPU, batch 2 per process, the
    settings of :data:`RVL_COMMON`) on :func:`rvl_pages`, counted (:func:`_counting`). Launched once per
    session; read it, never write into it."""
    pages = rvl_pages(tmp_path_factory)
    with _once_for_all_workers("torchrun-rvl", tmp_path_factory) as folder:
        if not (folder / "launch.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            env, _, _ = _counting(folder)
            cmd = [launcher("torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                   str(free_port()), "-m", "aetnet", *rvl_args(pages, tiny_base, folder / "run", 2)]
            proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
            (folder / "output.txt").write_text(proc.stdout + proc.stderr)
            (folder / "launch.json").write_text(json.dumps({"returncode": proc.returncode}))
        return _finished(folder)


def one_process_rvl(tmp_path_factory, tiny_base: Path) -> CountedRun:
    """The one-process reference of :func:`torchrun_rvl` (batch 4, the same pages and settings), run in this
    process (it is not what is tested) and counted the same way: Documents by ``Document.__post_init__``,
    Tesseract by the same wrapper, its own cold cache. Run once per session; read it, never write into it."""
    from aetnet.cli.main import main
    from aetnet.data.documents import document

    pages = rvl_pages(tmp_path_factory)
    with _once_for_all_workers("one-process-rvl", tmp_path_factory) as folder:
        if not (folder / "launch.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            env, _, documents = _counting(folder)
            built = [0]
            init = document.Document.__post_init__

            def counted(self):
                built[0] += 1
                init(self)

            with pytest.MonkeyPatch.context() as patch:
                for key in ("AETNET_CACHE", "PATH"):
                    patch.setenv(key, env[key])
                patch.setattr(document.Document, "__post_init__", counted)
                returncode = main(rvl_args(pages, tiny_base, folder / "run", 4))
            (documents / "rank0-in-process").write_text(str(built[0]))
            (folder / "output.txt").write_text("")
            (folder / "launch.json").write_text(json.dumps({"returncode": returncode}))
        return _finished(folder)
