"""``curves.png``: a run's training curves without a tracker, drawn from the Trainer's log history.

Three panels against the optimizer step: the total loss and every loss term; the task metric on the
validation split (the kept step marked) when the run validates; the learning rate (and AET's learned
temperature on a second axis). During training the figure is redrawn after an evaluation at most
once a minute (:class:`CurvesCallback`), so a long run can be watched without a tracker; the runner
draws the final one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

CURVES_FILE = "curves.png"


def series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over the log entries that hold it."""
    points = [(int(e["step"]), float(e[key])) for e in history if key in e and "step" in e]
    return [p[0] for p in points], [p[1] for p in points]


def loss_keys(history: list[dict[str, Any]]) -> list[str]:
    """``loss`` then every ``*_loss`` term logged during training, in first-seen order."""
    keys: list[str] = []
    for entry in history:
        for key in entry:
            if (key == "loss" or (key.endswith("_loss") and not key.startswith(("eval_", "train_")))) \
                    and key not in keys:
                keys.append(key)
    return keys


def plot_curves(history: list[dict[str, Any]], path: Path, metric: str, title: str = "") -> Path:
    """Draw the curves of one run into ``path`` (PNG) and return it.

    Args:
        history: the Trainer's ``state.log_history`` (or the lines of ``log.jsonl``).
        path: output image.
        metric: the task's headline metric (``f1``, ``accuracy``, ``anls``); ``eval_<metric>`` is drawn.
        title: figure title.
    """
    # A bare Figure on the Agg canvas: no pyplot state (the callback draws during training), no global
    # backend switch, and a third less time than pyplot's figure.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_val, ax_lr = fig.subplots(1, 3)
    for key in loss_keys(history):
        steps, values = series(history, key)
        ax_loss.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
    ax_loss.set(xlabel="step", ylabel="loss", title="training losses")
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    steps, values = series(history, f"eval_{metric}")
    if steps:
        ax_val.plot(steps, values, marker="o", color="tab:green", label=f"validation {metric}")
        best = max(range(len(values)), key=values.__getitem__)
        ax_val.scatter([steps[best]], [values[best]], s=120, facecolors="none", edgecolors="red",
                       label=f"best: step {steps[best]}")
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, "no validation during training\n(train.eval_steps)", ha="center", va="center",
                    transform=ax_val.transAxes)
    ax_val.set(xlabel="step", ylabel=metric, title="validation")
    steps, values = series(history, "learning_rate")
    ax_lr.plot(steps, values, color="tab:blue")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    t_steps, t_values = series(history, "temperature")
    if t_steps:
        twin = ax_lr.twinx()
        twin.plot(t_steps, t_values, color="tab:orange")
        twin.set_ylabel("temperature", color="tab:orange")
    if title:
        fig.suptitle(title)
    # Fixed margins: tight_layout draws the figure once more to measure it, half the cost of the plot.
    fig.subplots_adjust(left=0.06, right=0.95, bottom=0.14, top=0.85, wspace=0.35)
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


class CurvesCallback(TrainerCallback):
    """Redraws ``curves.png`` from the Trainer's log history after an evaluation, at most every
    ``every_s`` seconds (main process only).

    Args:
        path: the figure.
        metric: the task's headline metric.
        title: figure title.
        every_s: the shortest time between two drawings.
    """

    def __init__(self, path: Path, metric: str, title: str = "", every_s: float = 60.0):
        self.path, self.metric, self.title, self.every_s = Path(path), metric, title, every_s
        self._last = time.monotonic()

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero and time.monotonic() - self._last >= self.every_s:
            plot_curves(state.log_history, self.path, self.metric, self.title)
            self._last = time.monotonic()
