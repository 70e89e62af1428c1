"""``aetnet compare ... --push-to-hub OWNER/NAME``: the best model of a comparison on the Hub, with the
comparison's table and plots beside it.

The best model is the run with the highest task metric among the seeds of the strategy with the
highest mean (``runs.csv`` and ``results.csv`` of the comparison folder). It is exported (as
``aetnet export`` does), the comparison files go into its ``comparison/`` folder, its model card gets
the table, and the folder is pushed with :func:`aetnet.inference.hub.push_folder`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from aetnet.errors import AetnetError

COMPARISON_FILES = ("results.md", "results.csv", "results.png", "validation.png", "runs.csv")


def best_run(out_dir: str | Path, metric: str) -> tuple[str, Path]:
    """``(strategy, run folder)`` of the best run: best mean strategy, then its best seed."""
    import pandas as pd

    out_dir = Path(out_dir)
    runs = pd.read_csv(out_dir / "runs.csv")
    table = pd.read_csv(out_dir / "results.csv")
    if table[f"{metric}_mean"].isna().all():
        raise AetnetError(f"{out_dir / 'results.csv'}: no strategy has a {metric}; nothing to push")
    strategy = str(table.loc[table[f"{metric}_mean"].idxmax(), "strategy"])
    seeds = runs[runs["strategy"] == strategy]
    return strategy, Path(str(seeds.loc[seeds[metric].idxmax(), "run_dir"]))


def push_comparison(out_dir: str | Path, task: str, repo_id: str, private: bool = False,
                    revision: str | None = None) -> str:
    """Export the best run of the comparison in ``out_dir`` with the comparison files and push it.

    Returns:
        The commit URL.
    """
    from aetnet.export.folder import export_model
    from aetnet.inference.hub import push_folder
    from aetnet.inference.modelio import get_task

    metric, out_dir = get_task(task).metric, Path(out_dir)
    strategy, run_dir = best_run(out_dir, metric)
    with tempfile.TemporaryDirectory(prefix="aetnet-compare-") as scratch:
        export = export_model(run_dir, Path(scratch) / "export")
        (export / "comparison").mkdir()
        for name in COMPARISON_FILES:
            if (out_dir / name).is_file():
                shutil.copy(out_dir / name, export / "comparison" / name)
        table = (out_dir / "results.md").read_text(encoding="utf-8").split("\n", 1)[1]
        with open(export / "README.md", "a", encoding="utf-8") as fh:
            fh.write(f"\n## Strategy comparison\n\nThis model is the best {metric} run ({run_dir.name}) of the "
                     f"best strategy, **{strategy}**, of an `aetnet compare` on the same data, base and budget:"
                     f"\n{table}\n![results](comparison/results.png)\n")
        return push_folder(export, repo_id, private=private, revision=revision,
                           commit_message=f"aetnet compare {task}: best model ({strategy}, {run_dir.name})")
