"""Watching a run: trackers (``train.report_to``), ``log.jsonl`` and the values logged beside the losses.

Every logging step and every evaluation of the Trainer becomes one line of ``RUN/log.jsonl`` (the same
dictionaries as the Trainer's ``log_history``: ``loss``, each loss term, ``learning_rate``,
``temperature``, ``eval_<metric>``, ... and ``step``), so a run can be followed with ``tail -f`` and
plotted without a tracker. TensorBoard events go to ``RUN/tensorboard``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"

#: Trainer integration -> (availability check in transformers.integrations, what to install).
TRACKERS = {
    "tensorboard": ("is_tensorboard_available", "aetnet[tensorboard]"),
    "wandb": ("is_wandb_available", "wandb"),
    "mlflow": ("is_mlflow_available", "mlflow"),
    "comet_ml": ("is_comet_available", "comet_ml"),
    "neptune": ("is_neptune_available", "neptune"),
    "clearml": ("is_clearml_available", "clearml"),
    "dvclive": ("is_dvclive_available", "dvclive"),
    "swanlab": ("is_swanlab_available", "swanlab"),
    "trackio": ("is_trackio_available", "trackio"),
    "codecarbon": ("is_codecarbon_available", "codecarbon"),
    "dagshub": ("is_dagshub_available", "dagshub"),
    "azure_ml": ("is_azureml_available", "azureml-core"),
    "flyte": ("is_flytekit_available", "flytekit"),
    "kubeflow": ("is_kubeflow_available", "kubeflow"),
}


def check_trackers(names: list[str]) -> None:
    """Fail before training when a tracker in ``train.report_to`` is unknown or not installed.

    Raises:
        AetnetError: naming the tracker and the package to install.
    """
    from transformers import integrations

    for name in names:
        if name == "none":
            continue
        if name not in TRACKERS:
            raise AetnetError(f"train.report_to: unknown tracker '{name}'; choose none or any of "
                              f"{', '.join(sorted(TRACKERS))}")
        check, package = TRACKERS[name]
        if not getattr(integrations, check)():
            raise AetnetError(f"train.report_to={name}: the {name} package is not installed; "
                              f"`pip install {package}` (or set train.report_to=none)")


def point_tensorboard(trainer, folder: Path) -> None:
    """Send the TensorBoard events of ``trainer`` to ``folder`` (the Trainer's default is inside the
    checkpoints), unless ``$TENSORBOARD_LOGGING_DIR`` names another folder."""
    import os

    from transformers.integrations import TensorBoardCallback

    if os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is None:
            callback.logging_dir = str(folder)


class LogFileCallback(TrainerCallback):
    """Appends every Trainer log to ``log.jsonl`` as it happens, and rewrites the file from the
    Trainer's ``log_history`` at the end (after a resume the history is the authoritative one)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOG_FILE

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**logs, "step": state.global_step}) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_log_file(self.path, state.log_history)


def write_log_file(path: Path, history: list[dict[str, Any]]) -> None:
    """One JSON line per entry of a Trainer ``log_history``."""
    with open(path, "w", encoding="utf-8") as fh:
        for entry in history:
            fh.write(json.dumps(entry) + "\n")


def read_log_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``log.jsonl`` (an empty list when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def model_log_values(model: torch.nn.Module) -> dict[str, float]:
    """Values of the model worth logging beside the losses: AET's learned temperature ``temperature``."""
    temp = _find_temperature(model)
    return {"temperature": round(float(temp.detach()), 6)} if temp is not None else {}


def _find_temperature(model: torch.nn.Module) -> torch.Tensor | None:
    # A scan of the parameter names, once per logging step: cheap next to a training step.
    return next((p for name, p in model.named_parameters() if name.endswith("alignment.temp")), None)
