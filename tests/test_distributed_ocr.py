"""Two training processes (torchrun, gloo) on RVL-CDIP-format pages with a cold OCR cache: every page is
given to Tesseract once (the node's main process prepares the data, the other waits and is handed the
prepared windows: it builds no document), and the metrics equal a one-process run.

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


def _env(tmp_path, name: str, log) -> dict[str, str]:
    cache = tmp_path / f"cache-{name}"
    cache.mkdir()
    return dict(os.environ, AETNET_CACHE=str(cache), PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
                OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def _documents_built(folder) -> dict[str, int]:
    """Documents built per rank (summed over the rank's processes: DataLoader workers build none)."""
    counts: dict[str, int] = {}
    for f in folder.iterdir():
        if f.suffix == ".tmp":
            continue
        rank = f.name.split("-")[0]
        counts[rank] = counts.get(rank, 0) + int(f.read_text())
    return counts


def test_torchrun_recognises_each_page_once_and_matches_one_process(tmp_path, tiny_base, monkeypatch):
    """The one-process reference runs in this process (it is not what is tested: counted the same way, by
    Document.__post_init__, with the same Tesseract wrapper and its own cold cache); torchrun is a subprocess."""
    from aetnet.cli.main import main
    from aetnet.data.documents import document

    data = make_rvl_cdip_demo(tmp_path / "rvl", n_per_class=2, n_eval_per_class=1)  # 8 train, 4 test pages
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "tesseract"
    real = shutil.which("tesseract")
    assert real, "tesseract is not installed"
    base = str(tiny_base / "layoutlmv3")
    (tmp_path / "site").mkdir()
    outcomes, documents = {}, {}
    for name, launch, batch in (
        ("one", None, "train.batch_size=4"),
        # torchrun, run by this Python (the console script may belong to another environment)
        ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                 "127.0.0.1", "--master_port", str(_free_port()), "-m", "aetnet"], "train.batch_size=2"),
    ):
        log = tmp_path / f"tesseract-{name}.log"
        log.touch()
        script.write_text(WRAPPER.format(real=real, log=log))
        script.chmod(0o755)
        counts = tmp_path / f"documents-{name}"
        counts.mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE.format(folder=str(counts)))
        args = ["finetune", "rvl-cdip", "--data", str(data), "--base", base, "--output", str(tmp_path / name),
                batch, *COMMON]
        env = _env(tmp_path, name, log)
        if launch is None:
            built = [0]
            init = document.Document.__post_init__

            def counted(self, init=init, built=built):
                built[0] += 1
                init(self)

            with monkeypatch.context() as patch:
                for key in ("AETNET_CACHE", "PATH"):
                    patch.setenv(key, env[key])
                patch.setattr(document.Document, "__post_init__", counted)
                assert main(args) == 0
            (counts / "rank0-in-process").write_text(str(built[0]))
        else:
            proc = subprocess.run([*launch, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
        documents[name] = _documents_built(counts)
        outcomes[name] = (log.read_text().split(), json.loads((tmp_path / name / "metrics.json").read_text()))
    for name, (hashes, _) in outcomes.items():
        assert len(hashes) == 12 and len(set(hashes)) == 12, (name, len(hashes), len(set(hashes)))
    # 8 training and 4 test pages read by the single process and by the node's main process; the other
    # process is handed the prepared windows and page images and reads no document at all
    assert documents["one"].get("rank0", 0) >= 12
    assert documents["two"].get("rank0", 0) == documents["one"]["rank0"]
    assert documents["two"].get("rank1") == 0, documents
    one, two = outcomes["one"][1], outcomes["two"][1]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["train_documents"] == two["train_documents"] == 8
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert one["accuracy"] == pytest.approx(two["accuracy"])
