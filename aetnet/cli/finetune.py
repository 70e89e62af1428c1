"""``aetnet finetune TASK``: train and evaluate one task with one strategy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aetnet.cli.run_flags import add_run_flags, add_setting_flags, run_base, run_overrides

EPILOG = """examples:
  aetnet finetune funsd --demo
  aetnet finetune funsd --base microsoft/layoutlmv3-base --data ~/data/FUNSD --output runs/funsd-full
  aetnet finetune funsd --strategy aet --base microsoft/layoutlmv3-base --data ~/data/FUNSD
  aetnet finetune funsd --demo train.max_steps=20 train.learning_rate=1e-4
  aetnet finetune funsd-re --demo                             # question -> answer links (key-value pairs)
  aetnet finetune xfund --lang zh --data ~/data/XFUND          # Chinese forms (--lang all: all seven)
  aetnet finetune funsd --output runs/funsd-full --resume      # continue an interrupted run
  aetnet finetune funsd --data ~/data/FUNSD train.eval_steps=100 train.keep=best \\
      train.early_stopping_patience=5 train.report_to=tensorboard   # validate, keep the best, watch it
  torchrun --nproc_per_node 2 -m aetnet finetune funsd --data ~/data/FUNSD
"""

#: The setting shortcuts finetune offers (:data:`aetnet.cli.run_flags.SETTING_FLAGS`).
SETTINGS = ("--bf16", "--seed", "--stride", "--box-level", "--on-bad-document", "--lang")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a task (funsd, ...) with a tuning strategy",
        description="Fine-tune LayoutLMv3 on a task and evaluate it. Writes config.yaml, metrics.json, "
        "predictions.jsonl, checkpoints/ and model/ into the run folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_flags(p, output="run folder (default runs/<task>-<strategy>-<time>)")
    p.add_argument("--recipe", help="built-in recipe name (funsd/full) or a YAML file; see `aetnet recipes ls`")
    p.add_argument("--strategy", help="tuning strategy: full, head, aet, ... (default: the recipe's)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    add_setting_flags(p, *SETTINGS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.train.runner import finetune

    run_dir = finetune(
        args.task,
        recipe=args.recipe,
        strategy=args.strategy,
        base=run_base(args),
        data=args.data,
        output=args.output,
        demo=args.demo,
        resume=args.resume,
        overrides=run_overrides(args, *SETTINGS),
    )
    metrics_path = Path(run_dir) / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        keys = ("f1", "precision", "recall", "accuracy", "macro_f1", "anls", "exact_match")
        headline = {k: metrics[k] for k in keys if k in metrics}
        print(json.dumps({"run_dir": str(run_dir), **headline}, indent=2))
    return 0
