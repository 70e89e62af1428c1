"""Never train on the evaluation set: every task, given a dataset with a single split named as an
evaluation split, carves a deterministic, document-grouped share out of it (no document or page on
both sides), and says so (``eval_split``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aetnet.config.settings import resolve_config
from aetnet.registry import TASKS


def _load(task_name: str, data: Path, **data_cfg):
    import aetnet.tasks  # noqa: F401  (registers the tasks)

    cfg = resolve_config({}, {"task": task_name, "data": {"path": str(data), **data_cfg}})
    return TASKS.get(task_name)().load(cfg)


def _pages(examples) -> set[str]:
    """The page of each example: QA examples by their page's image, documents by their id."""
    return {str(getattr(ex, "document", ex).id) for ex in examples}


def _assert_disjoint(splits, source_name: str, total: int):
    train, evaluation = splits["train"], splits["eval"]
    assert train and evaluation, "both sides must hold something for the check to mean anything"
    assert len(train) + len(evaluation) == total
    assert not _pages(train) & _pages(evaluation), "a page is both trained on and evaluated"
    assert splits.eval_split.startswith(f"carved from {source_name}")


def _link_all(src: Path, dst: Path, pattern: str) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob(pattern))
    for f in files:
        (dst / f.name).symlink_to(f)
    return len(files)


@pytest.mark.parametrize("task", ["funsd", "funsd-re"])
def test_funsd_with_only_testing_data(shared_data, tmp_path, task):
    src = shared_data / "funsd" / "dataset" / "testing_data"
    n = _link_all(src / "annotations", tmp_path / "testing_data" / "annotations", "*.json")
    _link_all(src / "images", tmp_path / "testing_data" / "images", "*.png")
    _assert_disjoint(_load(task, tmp_path), "test", n)


def test_funsd_release_evaluates_on_its_test_split(shared_data):
    splits = _load("funsd", shared_data / "funsd")
    assert splits.eval_split == "test" and len(splits["eval"]) == 6
    assert not _pages(splits["train"]) & _pages(splits["eval"])


def test_cord_with_only_a_test_folder(shared_data, tmp_path):
    n = _link_all(shared_data / "cord" / "json", tmp_path / "test" / "json", "*.json")
    (tmp_path / "test" / "image").mkdir()
    _assert_disjoint(_load("cord", tmp_path), "test", n)


def test_cord_flat_sample_says_it_was_carved(shared_data):
    splits = _load("cord", shared_data / "cord")
    assert splits.eval_split.startswith("carved")
    assert not _pages(splits["train"]) & _pages(splits["eval"])


def test_rvl_cdip_with_only_test_labels(shared_data, tmp_path):
    page = shared_data / "rvl_cdip" / "images" / "80035521.tif"
    (tmp_path / "images").mkdir()
    lines = []
    for k, label in enumerate([15, 0, 1, 15, 2]):  # one real page under five names (OCR'd once: cached)
        (tmp_path / "images" / f"p{k}.tif").symlink_to(page)
        lines.append(f"images/p{k}.tif {label}")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "test.txt").write_text("\n".join(lines) + "\n")
    _assert_disjoint(_load("rvl-cdip", tmp_path), "test", 5)


def test_docvqa_with_only_a_val_file(shared_data, tmp_path):
    """The official val file alone: whole pages (all their questions) go to one side."""
    sample = json.loads((shared_data / "docvqa" / "val_v1.0_sample.json").read_text())
    (tmp_path / "documents").mkdir()
    page = shared_data / "docvqa" / sample["data"][0]["image"]
    data = []
    for k in range(4):  # four page names (one real page, OCR'd once), three questions each
        shutil.copy(page, tmp_path / "documents" / f"page{k}.png")
        for q in range(3):
            data.append({**sample["data"][0], "questionId": 100 * k + q, "docId": k,
                         "image": f"documents/page{k}.png"})
    (tmp_path / "val_v1.0.json").write_text(json.dumps({**sample, "data": data}))
    splits = _load("docvqa", tmp_path, eval_fraction=0.25)
    _assert_disjoint(splits, "val", 12)
    assert len(splits["eval"]) == 3  # one whole page of four


@pytest.mark.parametrize("names", [("val_v1",), ("test",), ("train",)])
def test_map_splits_never_evaluates_on_the_training_pool(names):
    from types import SimpleNamespace as NS

    from aetnet.data.documents.splits import map_splits

    pool = [NS(id=f"d{i}") for i in range(10)]
    out = map_splits({names[0]: pool}, ("val", "test"), 0.2, 3, "here")
    assert len(out["eval"]) == 2 and len(out["train"]) == 8
    assert not {d.id for d in out["train"]} & {d.id for d in out["eval"]}
    assert out.eval_split == f"carved from {names[0]} (20%)"
