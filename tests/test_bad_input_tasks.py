"""Bad files in CORD, RVL-CDIP and DocVQA data: one clear error by default, recorded skips with
--on-bad-document skip."""

from __future__ import annotations

import json
import shutil

from aetnet.cli.main import main
from aetnet.data.demo import ensure_demo

BUDGET = ["train.max_steps=1", "train.batch_size=2", "train.save_steps=100", "data.max_eval_documents=2"]


def _run(task, data, out, *extra):
    return main(["finetune", task, "--base", "tiny", "--data", str(data), "--output", str(out), *BUDGET, *extra])


def _last_error(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("aetnet: error:")]


def test_cord_broken_json(tmp_path, capsys):
    root = tmp_path / "cord"
    shutil.copytree(ensure_demo("cord"), root)
    (root / "train" / "json" / "receipt_broken.json").write_text('{"valid_line": [')
    assert _run("cord", root, tmp_path / "a") == 2
    (error,) = _last_error(capsys)
    assert "receipt_broken.json" in error and "JSON" in error
    assert _run("cord", root, tmp_path / "b", "--on-bad-document", "skip", "data.max_train_documents=4") == 0
    (record,) = [json.loads(x) for x in (tmp_path / "b" / "skipped.jsonl").read_text().splitlines()]
    assert record["id"] == "receipt_broken" and "JSON" in record["reason"]


def test_rvl_cdip_corrupt_image(tmp_path, capsys):
    root = tmp_path / "rvl"
    shutil.copytree(ensure_demo("rvl-cdip"), root)
    lines = (root / "labels" / "train.txt").read_text().splitlines()
    first = lines[0].split()[0]
    (root / first).write_bytes(b"II*\x00 not really a tiff")
    assert _run("rvl-cdip", root, tmp_path / "a", "data.max_train_documents=2") == 2
    (error,) = _last_error(capsys)
    assert first.split("/")[-1] in error
    assert _run("rvl-cdip", root, tmp_path / "b", "data.max_train_documents=3", "--on-bad-document", "skip") == 0
    records = [json.loads(x) for x in (tmp_path / "b" / "skipped.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["split"] == "train"
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["train_documents"] == 2


def test_docvqa_entry_without_question(tmp_path, capsys):
    root = tmp_path / "docvqa"
    shutil.copytree(ensure_demo("docvqa"), root)
    path = root / "train_v1.0.json"
    record = json.loads(path.read_text())
    del record["data"][0]["question"]
    path.write_text(json.dumps(record))
    assert _run("docvqa", root, tmp_path / "a") == 2
    (error,) = _last_error(capsys)
    assert "train_v1.0.json" in error and "data[0].question" in error
    assert _run("docvqa", root, tmp_path / "b", "--on-bad-document", "skip", "data.max_train_documents=4") == 0
    (skipped,) = [json.loads(x) for x in (tmp_path / "b" / "skipped.jsonl").read_text().splitlines()]
    assert skipped["id"] == str(record["data"][0]["questionId"]) and "question" in skipped["reason"]
