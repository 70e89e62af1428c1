"""Two training processes (torchrun, gloo) on RVL-CDIP-format pages with a cold OCR cache: every page is
given to Tesseract once (the node's main process prepares the data, the other waits and is handed the
prepared windows: it builds no document), and the metrics equal a one-process run.

Checked on the session's torchrun run and its one-process reference (tests/ddp_runs.py, which
test_distributed_train and test_window_store check too): Tesseract runs are counted by a wrapper on PATH that
logs the SHA-256 of each recognised page image, Documents per rank by a ``sitecustomize`` (the one-process
reference runs in the pytest process, counted the same way, by ``Document.__post_init__``, with the same
Tesseract wrapper and its own cold cache).
"""

from __future__ import annotations

import pytest

from tests.ddp_runs import one_process_rvl, torchrun_rvl


def test_torchrun_recognises_each_page_once_and_matches_one_process(tmp_path_factory, tiny_base):
    runs = {"one": one_process_rvl(tmp_path_factory, tiny_base), "two": torchrun_rvl(tmp_path_factory, tiny_base)}
    for name, run in runs.items():
        assert run.returncode == 0, (name, run.output[-3000:])
    for name, run in runs.items():
        hashes = run.tesseract  # 8 training, 4 validation and 4 test pages
        assert len(hashes) == 16 and len(set(hashes)) == 16, (name, len(hashes), len(set(hashes)))
    documents = {name: run.documents for name, run in runs.items()}
    # the 16 pages read by the single process and by the node's main process; the other process is handed
    # the prepared windows and page images and reads no document at all
    assert documents["one"].get("rank0", 0) >= 16
    assert documents["two"].get("rank0", 0) == documents["one"]["rank0"]
    assert documents["two"].get("rank1") == 0, documents
    one, two = runs["one"].metrics, runs["two"].metrics
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["train_documents"] == two["train_documents"] == 8
    assert abs(one["train_loss"] - two["train_loss"]) <= 0.02 * one["train_loss"]
    assert one["accuracy"] == pytest.approx(two["accuracy"])
