"""Warmup through the real Trainer (step and epoch schedules) and the parameter figures of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from aetnet.train.runner import finetune
from aetnet.train.trainer import warmup_steps

LR = 1e-3
COMMON = ["train.batch_size=2", "data.max_train_documents=2", "data.max_eval_documents=1",
          "train.logging_steps=1", f"train.learning_rate={LR}", "train.warmup_ratio=0.5",
          "train.lr_scheduler=linear", "data.max_length=128", "data.stride=32"]


def _learning_rates(run: Path) -> tuple[list[float], int]:
    """The logged learning rate after each optimizer step, and the run's total steps."""
    last = max((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    lrs = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    return lrs, state["max_steps"]


def test_warmup_steps_are_exact_ratios():
    assert warmup_steps(0.1, 300) == 30  # 0.1 * 300 = 30.000000000000004 in floats
    assert warmup_steps(0.1, 1000) == 100
    assert warmup_steps(0.1, 95) == 10  # a partial step rounds up
    assert warmup_steps(0.0, 50) == 0


@pytest.mark.parametrize("schedule", [["train.max_steps=8", "train.save_steps=8"],
                                      ["train.max_steps=-1", "train.epochs=4", "train.save_steps=1000"]],
                         ids=["steps", "epochs"])
def test_learning_rate_rises_during_warmup_for_step_and_epoch_schedules(tmp_path, schedule):
    run = finetune("funsd", base="tiny", demo=True, output=tmp_path / "run", overrides=COMMON + schedule)
    lrs, total = _learning_rates(run)
    assert total >= 4 and len(lrs) == total
    warm = math.ceil(total / 2)  # warmup_ratio 0.5, by hand
    # Linear warmup: step s (0-based) uses LR * s / warm, then the LR decays linearly to 0.
    expected = [LR * s / warm if s < warm else LR * (total - s) / (total - warm) for s in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lrs[0] < lrs[1] <= lrs[warm - 1] < lrs[warm] == pytest.approx(LR)


@pytest.mark.parametrize("strategy", ["aet", "aet-lora"])
def test_aet_parameter_figures_add_up_and_match_the_export(tmp_path, strategy):
    from aetnet.export.folder import export_model

    run = finetune("funsd", strategy=strategy, base="tiny", demo=True, output=tmp_path / "run",
                   overrides=["train.max_steps=1", "train.save_steps=1", "train.batch_size=2",
                              "data.max_train_documents=2", "data.max_eval_documents=1", "data.max_length=128",
                              "data.stride=32", "aet.queue_size=4", "train.logging_steps=1"])
    metrics = json.loads((run / "metrics.json").read_text())
    inference, only = metrics["inference_parameters"], metrics["training_only_parameters"]
    assert inference + only == metrics["total_parameters"]
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    # Training-only = every alignment.* tensor of the trainer checkpoint (momentum copies, projections,
    # temperature, queue entries; the queue's integer document ids and pointer are not values).
    last = next((run / "checkpoints").glob("checkpoint-*"))
    # The share of text tokens PITA used is logged with the loss terms.
    logged = json.loads((last / "trainer_state.json").read_text())["log_history"][0]
    assert 0.0 <= logged["pita_coverage"] <= 1.0 and "pita_loss" in logged
    with safe_open(str(last / "model.safetensors"), "pt") as fh:
        tensors = [fh.get_tensor(k) for k in fh.keys() if k.startswith("alignment.")]
    alignment = sum(t.numel() for t in tensors if t.is_floating_point())
    assert only == alignment
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["aet"]["queue_size"] == 4
    # The export holds exactly the inference parameters.
    out = export_model(run, tmp_path / "export")
    exported = 0
    for file in Path(out).rglob("*.safetensors"):
        with safe_open(str(file), "pt") as fh:
            exported += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    assert exported == inference


def test_pita_coverage_warning_is_given_once_and_only_under_five_percent(caplog):
    import logging

    from aetnet.strategies.aet.strategy import PitaCoverageCallback

    callback = PitaCoverageCallback()
    with caplog.at_level(logging.WARNING, logger="aetnet.strategies.aet.strategy"):
        callback.on_log(None, None, None, logs={"loss": 1.0})  # a log without the figure
        callback.on_log(None, None, None, logs={"pita_coverage": 0.05})
        assert not caplog.records
        callback.on_log(None, None, None, logs={"pita_coverage": 0.017})
        callback.on_log(None, None, None, logs={"pita_coverage": 0.0})
    assert len(caplog.records) == 1 and "1.7%" in caplog.records[0].getMessage()
