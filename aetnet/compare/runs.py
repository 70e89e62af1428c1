"""Compare tuning strategies on one task: same data, base, budget and seeds; mean and spread per strategy.

Each run is an ordinary :func:`aetnet.train.runner.finetune` run in ``OUTPUT/<strategy>/seed<k>``
(``train.seed=k``, k = 0..seeds-1), using the strategy's built-in recipe ``<task>/<strategy>.yaml``
when there is one, with the comparison's ``key=value`` overrides applied to every run. A run whose
folder already holds ``metrics.json`` is finished and is not run again; a folder without it is
resumed from its last checkpoint, so an interrupted comparison picks up where it stopped.

With ``devices`` (``--devices 0,1,2,3``) the runs form a queue served by one worker process per
device (``CUDA_VISIBLE_DEVICES`` set to it; on CPU each "device" is simply one more process): the
same runs, the same folders and the same table as the sequential comparison, in less wall time. Each
run's output goes to ``OUTPUT/logs/<strategy>-seed<k>.log``.

Outputs in ``OUTPUT``:

* ``runs.csv``: one row per run (strategy, seed, the task metric, costs, run folder);
* ``results.csv``: one row per strategy: runs, metric mean and sample standard deviation (n-1; empty
  for a single seed), trainable, inference (what an export holds), training-only (AET's momentum
  copies, projections, temperature, queues) and total parameters, mean step time, peak memory (max over runs;
  GPU peaks are reset before each run, CPU figures are the process's maximum RSS so far);
* ``results.md``: the same table in Markdown;
* ``results.png``: the metric per strategy (mean, +-1 std error bars and every seed as a dot), and the
  metric against trainable parameters (log scale);
* ``validation.png``: the validation curve of every run (runs that validate during training,
  ``train.eval_steps``), with the validation-selected step marked.

The tables also give, per run and mean per strategy, the validation-selected step (``best_step``) and
the best validation metric (``best_validation_<metric>``) when the runs validate.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aetnet.compare.devices import fill_ocr_cache, parse_devices, run_on_devices
from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

#: Columns copied from each run's metrics.json into runs.csv (besides the task metric).
COST_COLUMNS = ("trainable_parameters", "inference_parameters", "training_only_parameters", "total_parameters",
                "step_time_s", "peak_memory_mb", "train_seconds")
#: Settings that must agree across strategies for a fair comparison (a difference is warned about).
BUDGET_KEYS = (("train", "max_steps"), ("train", "epochs"), ("train", "batch_size"),
               ("train", "gradient_accumulation_steps"))


def parse_strategies(text: str | Sequence[str]) -> list[str]:
    """``"full,lora"`` or ``["full", "lora"]`` -> ``["full", "lora"]`` (order kept, duplicates dropped)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            out.append(item)
    if not out:
        raise AetnetError("--strategies is empty; name at least one, for example --strategies full,lora")
    return out


def _resolve(task: str, strategy: str, base: str | None, data: str | None, overrides: list[str]):
    """The run configuration ``finetune`` will use for ``strategy`` (validates keys before any run)."""
    from aetnet.config.recipes import find_recipe
    from aetnet.config.settings import load_recipe_dict, resolve_config

    flags: dict[str, Any] = {"task": task, "strategy": strategy}
    if base:
        flags["model"] = {"base": base}
    if data:
        flags["data"] = {"path": data}
    recipe_path = find_recipe(None, task, strategy)
    recipe = load_recipe_dict(recipe_path) if recipe_path else {}
    return resolve_config(recipe, flags, overrides)


def _check_plan(task: str, strategies: list[str], seeds: int, base, data, overrides: list[str]) -> None:
    """Fail before anything runs: unknown task or strategy, bad keys, prompts that cannot fit."""
    from aetnet.inference.modelio import get_strategy, get_task

    if seeds < 1:
        raise AetnetError(f"--seeds {seeds}: run at least one seed")
    get_task(task)
    for name in strategies:
        get_strategy(name)  # an unknown name raises the registry's error listing the registered ones
    budgets: dict[str, tuple] = {}
    for name in strategies:
        cfg = _resolve(task, name, base, data, overrides)
        strategy = get_strategy(name)
        strategy.check_config(cfg)
        budgets[name] = tuple(getattr(getattr(cfg, s), k) for s, k in BUDGET_KEYS)
    if len(set(budgets.values())) > 1:
        keys = ", ".join(f"{s}.{k}" for s, k in BUDGET_KEYS)
        logger.warning("strategies train with different budgets (%s): %s; pass key=value overrides to "
                       "equalise them", keys, budgets)


def compare(
    task: str,
    strategies: str | Sequence[str],
    *,
    seeds: int = 3,
    data: str | None = None,
    base: str | None = None,
    demo: bool = False,
    output: str | Path | None = None,
    overrides: list[str] | None = None,
    devices: str | Sequence[str] | None = None,
) -> Path:
    """Run every strategy with every seed (skipping finished runs) and write the comparison.

    Args:
        task: registered task name (``funsd``).
        strategies: names or a comma-separated string (``full,aet,lora,prompt,head``).
        seeds: number of seeds; run k uses ``train.seed=k``.
        data: dataset path or hub id, the same for every run.
        base: LayoutLMv3 hub id, folder or ``tiny``, the same for every run.
        demo: use the embedded demo data.
        output: comparison folder (default ``runs/compare-<task>``).
        overrides: ``key=value`` strings applied to every run (the seed override comes last).
        devices: run in parallel, one worker process per device (``"0,1"`` or ``["0", "1"]``: GPU
            indices; on CPU, process slots); ``None`` runs one after the other in this process.

    Returns:
        The comparison folder holding ``results.csv``, ``results.md``, ``results.png`` and ``runs.csv``.
    """
    from aetnet.train.runner import finetune

    names = parse_strategies(strategies)
    overrides = list(overrides or [])
    _check_plan(task, names, seeds, base, data, overrides)
    out_dir = Path(output) if output else Path("runs") / f"compare-{task}"
    out_dir.mkdir(parents=True, exist_ok=True)
    pending = []
    for name in names:
        for seed in range(seeds):
            run_dir = out_dir / name / f"seed{seed}"
            if (run_dir / "metrics.json").is_file():
                logger.info("compare: %s seed %d already finished, skipped", name, seed)
                continue
            pending.append({"task": task, "strategy": name, "base": base, "data": data, "output": str(run_dir),
                            "demo": demo, "resume": run_dir.is_dir(), "overrides": overrides + [f"train.seed={seed}"]})
    device_list = parse_devices(devices) if devices is not None else None
    if device_list:
        if pending:  # the parallel runs would each recognise the same pages at the same time
            job = pending[0]
            fill_ocr_cache(task, _resolve(task, job["strategy"], base, data, job["overrides"]), demo)
        run_on_devices(pending, device_list, out_dir / "logs")
    else:
        for job in pending:
            logger.info("compare: running %s seed %s in %s", job["strategy"], job["overrides"][-1], job["output"])
            _reset_peak_memory()
            finetune(job.pop("task"), **job)
    write_results(out_dir, task, names, seeds)
    return out_dir


def _reset_peak_memory() -> None:
    """Start each run's GPU peak-memory count afresh (the runs share one process).

    On CPU the runner reports the process's maximum RSS, which cannot be reset: there, the peak
    memory of a later run is at least that of the runs before it.
    """
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def collect_runs(out_dir: Path, strategies: list[str], seeds: int, metric: str):
    """One row per finished run: strategy, seed, metric, costs and folder (a pandas DataFrame)."""
    import pandas as pd

    rows = []
    for name in strategies:
        for seed in range(seeds):
            run_dir = out_dir / name / f"seed{seed}"
            metrics = json.loads((run_dir / "metrics.json").read_text())
            row: dict[str, Any] = {"strategy": name, "seed": seed, metric: metrics.get(metric, math.nan)}
            row.update({c: metrics.get(c, math.nan) for c in COST_COLUMNS})
            for key in ("best_step", f"best_validation_{metric}"):  # None/absent: the run did not validate
                value = metrics.get(key)
                row[key] = math.nan if value is None else value
            row["run_dir"] = str(run_dir)
            rows.append(row)
    return pd.DataFrame(rows)


def summarise(runs, metric: str, strategies: list[str]):
    """Per strategy: runs, metric mean/std (sample, n-1), parameters, mean step time, max peak memory, and
    the mean validation-selected step and best validation metric (NaN when the runs did not validate)."""
    import pandas as pd

    grouped = runs.groupby("strategy", sort=False)
    table = pd.DataFrame({
        "runs": grouped.size(),
        f"{metric}_mean": grouped[metric].mean(),
        f"{metric}_std": grouped[metric].std(ddof=1),
        "trainable_parameters": grouped["trainable_parameters"].max(),
        "inference_parameters": grouped["inference_parameters"].max(),
        "training_only_parameters": grouped["training_only_parameters"].max(),
        "total_parameters": grouped["total_parameters"].max(),
        "step_time_s": grouped["step_time_s"].mean(),
        "peak_memory_mb": grouped["peak_memory_mb"].max(),
        "best_step_mean": grouped["best_step"].mean(),
        f"best_validation_{metric}_mean": grouped[f"best_validation_{metric}"].mean(),
    }).reindex(strategies)
    table["trainable_percent"] = 100.0 * table["trainable_parameters"] / table["total_parameters"]
    table.index.name = "strategy"
    return table.reset_index()


def _count(value) -> str:
    """A parameter count with thousands separators; ``-`` for a run written before the figure existed."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{int(value):,}"


def _number(value, spec: str) -> str:
    """A mean formatted with ``spec``; ``-`` when missing (runs without validation)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(table, metric: str) -> str:
    """The summary as a Markdown table (written by hand: pandas' ``to_markdown`` needs tabulate)."""
    header = ["strategy", "runs", f"{metric} (mean ± std)", "trainable params", "trainable %",
              "inference params", "training-only params", "total params", "step time (s)", "peak memory (MB)",
              "val-selected step", f"best val {metric}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table.to_dict("records"):
        std = row[f"{metric}_std"]
        spread = f" ± {std:.4f}" if isinstance(std, float) and not math.isnan(std) else ""
        cells = [row["strategy"], str(int(row["runs"])), f"{row[f'{metric}_mean']:.4f}{spread}",
                 _count(row["trainable_parameters"]), f"{row['trainable_percent']:.3f}",
                 _count(row["inference_parameters"]), _count(row["training_only_parameters"]),
                 _count(row["total_parameters"]), f"{row['step_time_s']:.4f}",
                 f"{row['peak_memory_mb']:.1f}", _number(row.get("best_step_mean"), ".1f"),
                 _number(row.get(f"best_validation_{metric}_mean"), ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_results(table, metric: str, path: Path, runs=None) -> None:
    """``results.png``: metric per strategy (mean, error bars: 1 std, dots: the seeds of ``runs``) and
    metric vs trainable parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = table[f"{metric}_mean"].to_numpy(dtype=float)
    stds = table[f"{metric}_std"].fillna(0.0).to_numpy(dtype=float)
    params = table["trainable_parameters"].to_numpy(dtype=float)
    names = list(table["strategy"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar(names, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    if runs is not None:
        for i, name in enumerate(names):
            values = runs.loc[runs["strategy"] == name, metric].to_numpy(dtype=float)
            left.scatter([i] * len(values), values, color="black", s=14, zorder=3,
                         label="seeds" if i == 0 else None)
        left.legend(fontsize=8)
    left.set_ylabel(metric)
    left.set_title(f"{metric} per strategy (mean ± std)")
    right.errorbar(params, means, yerr=stds, fmt="o", capsize=4)
    for x, y, name in zip(params, means, names):
        right.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5))
    right.set_xscale("log")
    right.set_xlabel("trainable parameters (log scale)")
    right.set_ylabel(metric)
    right.set_title(f"{metric} vs trainable parameters")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_validation_curves(runs, metric: str, path: Path) -> None:
    """``validation.png``: ``eval_<metric>`` against step for every run (one colour per strategy, one line
    per seed), the validation-selected step of each run circled; a note when no run validated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aetnet.train.curves import series
    from aetnet.train.tracking import LOG_FILE, read_log_file

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    strategies = list(dict.fromkeys(runs["strategy"]))
    drawn = 0
    for row in runs.to_dict("records"):
        steps, values = series(read_log_file(Path(row["run_dir"]) / LOG_FILE), f"eval_{metric}")
        if not steps:
            continue
        colour = colours[strategies.index(row["strategy"]) % len(colours)]
        ax.plot(steps, values, color=colour, alpha=0.8, marker=".",
                label=row["strategy"] if row["seed"] == 0 else None)
        if not math.isnan(row["best_step"]) and int(row["best_step"]) in steps:
            at = steps.index(int(row["best_step"]))
            ax.scatter([steps[at]], [values[at]], s=80, facecolors="none", edgecolors=colour)
        drawn += 1
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no run validated during training\n(pass train.eval_steps=N)", ha="center",
                va="center", transform=ax.transAxes)
    ax.set(xlabel="step", ylabel=f"validation {metric}", title=f"validation {metric} of every run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def base_line(run_dir: Path) -> str:
    """The comparison's base and the licence of its weights (every run has the same base), from a run's
    ``config.yaml``; empty when the run has none."""
    import yaml

    from aetnet.bases import base_licence

    config = run_dir / "config.yaml"
    if not config.is_file():
        return ""
    base = str(((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("model") or {}).get("base", ""))
    if not base:
        return ""
    licence = base_licence(base)
    return f"Base `{base}`, licence `{licence.id}`: {licence.text}\n\n"


def write_results(out_dir: Path, task: str, strategies: list[str], seeds: int) -> None:
    """Write ``runs.csv``, ``results.csv``, ``results.md``, ``results.png`` and ``validation.png`` from the
    runs' metrics and logs."""
    from aetnet.inference.modelio import get_task

    metric = get_task(task).metric
    runs = collect_runs(out_dir, strategies, seeds, metric)
    table = summarise(runs, metric, strategies)
    runs.to_csv(out_dir / "runs.csv", index=False)
    table.to_csv(out_dir / "results.csv", index=False)
    text = (f"# {task}: strategy comparison\n\n{len(strategies)} strategies x {seeds} seeds; {metric} is the "
            "mean over seeds ± the sample standard deviation; step time is the mean over runs, peak memory "
            "the maximum.\n\n" + base_line(out_dir / strategies[0] / "seed0") + markdown_table(table, metric))
    (out_dir / "results.md").write_text(text, encoding="utf-8")
    plot_results(table, metric, out_dir / "results.png", runs)
    plot_validation_curves(runs, metric, out_dir / "validation.png")
    logger.info("compare: wrote %s", out_dir / "results.md")
