"""Runs users can watch and steer (issue 14): validation during training on a validation split,
best checkpoint, early stopping, resume, TensorBoard, log.jsonl and curves.png."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from aetnet.config.settings import resolve_config
from aetnet.errors import AetnetError
from aetnet.inference.evaluation import EvalSet
from aetnet.train.runner import finetune
from aetnet.train.validation import split_validation

SMALL = ["train.batch_size=2", "train.logging_steps=1", "data.max_train_documents=6", "data.max_eval_documents=2",
         "train.learning_rate=1e-3"]


def _scripted_validation(monkeypatch, scores, stop_at=None):
    """Validation scores given in advance, one per evaluation, so the step that must be kept is known
    (the Trainer, checkpointing and selection under test are all real)."""
    calls = []

    class Killed(Exception):
        pass

    def scripted(self, model):
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at:
            raise Killed(f"killed at evaluation {stop_at}")
        return {"f1": scores[len(calls) - 1]}

    monkeypatch.setattr(EvalSet, "__call__", scripted)
    return Killed


def _weights(path):
    return load_file(path / "model.safetensors")


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ splits
def test_carved_validation_is_page_grouped_deterministic_and_disjoint():
    pages = [SimpleNamespace(id=f"page{i}") for i in range(20)]
    # three questions per page: a page's questions must all land on one side
    examples = [SimpleNamespace(id=f"q{i}-{k}", document=p) for i, p in enumerate(pages) for k in range(3)]
    task = SimpleNamespace(documents=lambda exs: [ex.document for ex in exs])
    cfg = resolve_config({}, {}, ["train.eval_steps=5", "data.val_fraction=0.25"])
    train, val, name = split_validation(cfg, task, {"train": examples, "eval": []})
    train_pages, val_pages = {ex.document.id for ex in train}, {ex.document.id for ex in val}
    assert not train_pages & val_pages
    assert len(val_pages) == 5 and len(train_pages) == 15  # round(0.25 * 20) pages
    assert len(val) == 15 and len(train) + len(val) == len(examples)
    assert name == "carved from train (25%)"
    again = split_validation(cfg, task, {"train": list(examples), "eval": []})
    assert [ex.id for ex in again[1]] == [ex.id for ex in val]
    other = resolve_config({}, {}, ["train.eval_steps=5", "data.val_fraction=0.25", "train.seed=7"])
    assert {ex.document.id for ex in split_validation(other, task, {"train": examples})[1]} != val_pages


def test_own_validation_split_test_only_on_request_and_none_without_evaluation():
    task = SimpleNamespace(documents=lambda exs: list(exs))
    docs = {n: [SimpleNamespace(id=f"{n}{i}") for i in range(4)] for n in ("train", "eval", "validation")}
    on = resolve_config({}, {}, ["train.eval_steps=2"])
    assert split_validation(on, task, docs)[1:] == (docs["validation"], "validation")
    assert split_validation(on, task, docs)[0] == docs["train"]  # nothing carved when a split exists
    test = resolve_config({}, {}, ["train.eval_steps=2", "data.select_on=test"])
    assert split_validation(test, task, docs)[1:] == (docs["eval"], "test (data.select_on=test)")
    off = resolve_config({}, {}, [])
    assert split_validation(off, task, docs) == (docs["train"], [], None)


def test_map_splits_hands_a_dev_split_over_as_validation():
    from aetnet.data.documents.splits import map_splits

    splits = {"train": [SimpleNamespace(id="a")], "dev": [SimpleNamespace(id="b")], "test": [SimpleNamespace(id="c")]}
    out = map_splits(splits, ("test", "dev"), 0.2, 0, "x")
    assert [d.id for d in out["eval"]] == ["c"] and [d.id for d in out["validation"]] == ["b"]
    out = map_splits({"train": splits["train"], "dev": splits["dev"]}, ("test", "dev"), 0.2, 0, "x")
    assert [d.id for d in out["eval"]] == ["b"] and "validation" not in out  # dev is already the eval split


@pytest.mark.parametrize("overrides, message", [
    (["train.keep=best"], "train.keep=best needs validation"),
    (["train.early_stopping_patience=2"], "early_stopping_patience needs validation"),
    (["train.eval_strategy=epoch", "train.eval_steps=3"], "needs train.eval_strategy=steps"),
    (["train.eval_steps=2", "data.select_on=dev"], "data.select_on"),
    (["train.report_to=none,tensorboard"], "cannot be combined"),
])
def test_settings_that_would_do_nothing_are_refused(overrides, message):
    with pytest.raises(AetnetError, match=message):
        resolve_config({}, {}, overrides)


def test_missing_or_unknown_tracker_names_the_package():
    from aetnet.train.tracking import check_trackers

    with pytest.raises(AetnetError, match="unknown tracker 'tensorbord'"):
        check_trackers(["tensorbord"])
    from transformers.integrations import is_wandb_available

    if not is_wandb_available():
        with pytest.raises(AetnetError, match=r"pip install wandb"):
            check_trackers(["wandb"])
    check_trackers(["none", "tensorboard"])  # installed through the test extra


# ----------------------------------------------------------------------------- evaluation in training
def test_validation_at_eval_steps_on_the_carved_split(tmp_path):
    run = finetune("funsd", base="tiny", demo=True, output=tmp_path / "r", overrides=[
        *SMALL, "train.max_steps=5", "train.eval_steps=2", "data.val_fraction=0.3"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "eval_f1" in e] == [2, 4, 5]  # every 2 steps and at the end
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["selection_split"] == "carved from train (30%)"
    assert metrics["validation_documents"] == 2  # max_eval_documents caps validation too
    assert metrics["keep"] == "last" and metrics["kept_step"] == 5
    best = max((e for e in log if "eval_f1" in e), key=lambda e: e["eval_f1"])
    assert metrics["best_validation_f1"] == pytest.approx(best["eval_f1"])


def test_validation_every_epoch(tmp_path):
    run = finetune("funsd", base="tiny", demo=True, output=tmp_path / "r", overrides=[
        *SMALL, "data.max_train_documents=4", "train.max_steps=4", "train.eval_strategy=epoch", "train.keep=best"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(e["step"], e["epoch"]) for e in log if "eval_f1" in e] == [(2, 1.0), (4, 2.0)]  # 4 pages, batch 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_step"] in (2, 4) and metrics["kept_step"] == metrics["best_step"]


def test_keep_best_keeps_the_step_with_the_highest_validation_metric(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.2, 0.7, 0.4])
    run = finetune("funsd", base="tiny", demo=True, output=tmp_path / "r", overrides=[
        *SMALL, "train.max_steps=6", "train.eval_steps=2", "train.keep=best"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_step"] == 4 and metrics["kept_step"] == 4 and metrics["best_validation_f1"] == 0.7
    kept = _weights(run / "model")
    assert _same(kept, _weights(run / "checkpoints" / "checkpoint-4"))
    assert not _same(kept, _weights(run / "checkpoints" / "checkpoint-6"))
    state = json.loads((run / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(run / "checkpoints" / "checkpoint-4")


def test_early_stopping_stops_after_patience_evaluations(tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.5, 0.4, 0.45, 0.3, 0.9, 0.9])
    run = finetune("funsd", base="tiny", demo=True, output=tmp_path / "r", overrides=[
        *SMALL, "train.max_steps=6", "train.eval_steps=1", "train.early_stopping_patience=3"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_early"] is True
    assert metrics["trained_steps"] == metrics["kept_step"] == 4  # evaluations 2, 3, 4 did not beat 0.5
    assert metrics["best_step"] == 1


def test_resume_after_a_kill_keeps_best_checkpoint_and_patience(tmp_path, monkeypatch):
    overrides = [*SMALL, "train.max_steps=8", "train.eval_steps=1", "train.keep=best",
                 "train.early_stopping_patience=3"]
    scores = [0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    killed = _scripted_validation(monkeypatch, scores, stop_at=4)
    with pytest.raises(killed):
        finetune("funsd", base="tiny", demo=True, output=tmp_path / "r", overrides=overrides)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-1", "checkpoint-3"]
    # the resumed process scores evaluations 4, 5, ... of the same script
    calls = iter(scores[3:])
    monkeypatch.setattr(EvalSet, "__call__", lambda self, model: {"f1": next(calls)})
    run = finetune("funsd", base="tiny", demo=True, output=tmp_path / "r", resume=True, overrides=overrides)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and metrics["kept_step"] == 1
    assert metrics["trained_steps"] == 4  # patience counter 2 restored -> 3 at step 4 (not 0 -> 3 at step 6)
    assert _same(_weights(run / "model"), _weights(run / "checkpoints" / "checkpoint-1"))


def test_aet_evaluation_has_no_side_effects_through_the_trainer(tmp_path):
    """An AET run validating after every step ends bit-for-bit where the same run without validation
    ends: weights, momentum copies, queues and pointers (no EMA step, enqueue, augmentation or RNG use)."""
    common = [*SMALL, "train.max_steps=4", "train.save_steps=4", "aet.queue_size=6"]
    plain = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "plain", overrides=common)
    watched = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "watched",
                       overrides=[*common, "train.eval_steps=1", "data.select_on=test"])
    log = [json.loads(line) for line in (watched / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "eval_f1" in e] == [1, 2, 3, 4]
    a = _weights(plain / "checkpoints" / "checkpoint-4")
    b = _weights(watched / "checkpoints" / "checkpoint-4")
    assert any("queue" in k for k in a) and any("_m." in k for k in a)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    metrics = json.loads((watched / "metrics.json").read_text())
    assert metrics["selection_split"] == "test (data.select_on=test)"


# -------------------------------------------------------------------------------------- tracking
def test_tensorboard_log_jsonl_and_curves_of_an_aet_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "r", overrides=[
        *SMALL, "train.max_steps=4", "train.save_steps=3", "train.eval_steps=2", "train.report_to=tensorboard"])
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for term in ("loss", "task_loss", "ditc_loss", "imc_loss", "glitc_loss", "pita_loss", "pita_coverage",
                 "temperature", "learning_rate"):
        assert f"train/{term}" in tags, (term, sorted(tags))
    assert [e.step for e in acc.Scalars("eval/f1")] == [2, 4]
    assert [e.step for e in acc.Scalars("train/ditc_loss")] == [1, 2, 3, 4]

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    history = json.loads((run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert log[: len(history)] == history  # then the Trainer's end-of-training summary
    assert "train_runtime" in log[-1] and len(log) == len(history) + 1
    tb_f1 = [e.value for e in acc.Scalars("eval/f1")]
    assert tb_f1 == pytest.approx([e["eval_f1"] for e in log if "eval_f1" in e])
    temps = [e["temperature"] for e in log if "temperature" in e]
    assert len(temps) == 4 and all(0 < t < 1 for t in temps)

    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


_SHARD_DEFS = """
import torch


class Scorer(torch.nn.Module):
    # logits that depend on each token id and its position (so any reordering shows)
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(3, dtype=torch.float32))

    def forward(self, input_ids, attention_mask, bbox):
        position = torch.arange(input_ids.shape[1]).unsqueeze(0)
        return {"logits": (input_ids * 10 + position).unsqueeze(-1).float() * self.w}


lengths = [3, 5, 2, 4, 6, 1, 3]  # 7 windows over 2 processes: uneven shares
windows = [{"input_ids": torch.arange(1, n + 1) + i, "attention_mask": torch.ones(n, dtype=torch.long),
            "bbox": torch.zeros(n, 4, dtype=torch.long)} for i, n in enumerate(lengths)]
"""

_SHARD_MAIN = """
import sys
import torch.distributed as dist
from aetnet.inference.evaluation import chunk_outputs

rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
# two ranges of windows (3 and 4), each gathered on its own
outputs = [o for part in chunk_outputs(Scorer(), windows, [range(0, 3), range(3, 7)], 2, "token", 0, shared=True)
           for o in part]
torch.save([torch.as_tensor(o) for o in outputs], f"{out}/rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
"""


def test_validation_is_shared_among_processes_and_gathered_in_order(tmp_path):
    """Two gloo processes each predict their share of the windows; both get every window's output, in
    order, equal to one process predicting them all."""
    import socket
    import subprocess
    import sys

    from aetnet.inference.evaluation import predict_windows

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", _SHARD_DEFS + _SHARD_MAIN, str(rank), "2", str(port),
                               str(tmp_path)], stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    defs: dict = {}
    exec(_SHARD_DEFS, defs)
    expected = predict_windows(defs["Scorer"](), defs["windows"], 2, "token", 0)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(got) == len(expected) == 7
        for a, b in zip(got, expected):
            assert torch.equal(a, torch.as_tensor(b))


def test_curves_are_redrawn_during_training_after_an_evaluation(tmp_path):
    from aetnet.train.curves import CurvesCallback

    history = [{"loss": 2.0, "task_loss": 2.0, "learning_rate": 1e-3, "step": 1},
               {"eval_f1": 0.1, "step": 1}, {"loss": 1.5, "task_loss": 1.5, "learning_rate": 5e-4, "step": 2},
               {"eval_f1": 0.3, "step": 2}]
    state = SimpleNamespace(is_world_process_zero=True, log_history=history[:2])
    waiting = CurvesCallback(tmp_path / "a.png", "f1", every_s=3600)
    waiting.on_evaluate(None, state, None)
    assert not (tmp_path / "a.png").exists()  # drawn at most once an hour here
    eager = CurvesCallback(tmp_path / "b.png", "f1", every_s=0)
    eager.on_evaluate(None, SimpleNamespace(is_world_process_zero=False, log_history=history), None)
    assert not (tmp_path / "b.png").exists()  # only the main process draws
    eager.on_evaluate(None, SimpleNamespace(is_world_process_zero=True, log_history=history), None)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_curve_series_pick_training_loss_terms_and_steps():
    from aetnet.train.curves import loss_keys, series

    history = [{"loss": 2.0, "task_loss": 1.0, "ditc_loss": 1.0, "step": 1},
               {"eval_f1": 0.2, "eval_loss": 3.0, "step": 2},
               {"loss": 1.0, "task_loss": 0.5, "pita_loss": 0.5, "step": 3}, {"train_loss": 1.5, "step": 3}]
    assert loss_keys(history) == ["loss", "task_loss", "ditc_loss", "pita_loss"]
    assert series(history, "task_loss") == ([1, 3], [1.0, 0.5])
    assert series(history, "eval_f1") == ([2], [0.2])
