"""``aetnet finetune TASK``: train and evaluate one task with one strategy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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

#: What ``--demo`` changes unless the user sets it: a tiny offline model and a short schedule.
#: Per-task step counts come from :func:`demo_overrides` (pages and receipts learn faster than page
#: classes and answers with a tiny random model).
DEMO_OVERRIDES = [
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.learning_rate=1e-3",
    "train.warmup_ratio=0.05",
    "train.logging_steps=10",
    "train.save_steps=40",
    "aet.queue_size=16",
    "train.gradient_accumulation_steps=1",
]


DEMO_STEPS = {"funsd": 80, "funsd-re": 600, "cord": 200, "rvl-cdip": 300, "docvqa": 300}


def demo_overrides(task: str) -> list[str]:
    """The ``key=value`` settings ``--demo`` applies for ``task`` (user overrides come after them)."""
    return [*DEMO_OVERRIDES, f"train.max_steps={DEMO_STEPS.get(task, 80)}"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a task (funsd, ...) with a tuning strategy",
        description="Fine-tune LayoutLMv3 on a task and evaluate it. Writes config.yaml, metrics.json, "
        "predictions.jsonl, checkpoints/ and model/ into the run folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", help="task name, e.g. funsd")
    p.add_argument("--recipe", help="built-in recipe name (funsd/full) or a YAML file; see `aetnet recipes ls`")
    p.add_argument("--base", help="LayoutLMv3 hub id or folder, or 'tiny' (offline; the default with --demo)")
    p.add_argument("--strategy", help="tuning strategy: full, head, aet, ... (default: the recipe's)")
    p.add_argument("--data", help="dataset folder, save_to_disk folder or hub id")
    p.add_argument("--output", help="run folder (default runs/<task>-<strategy>-<time>)")
    p.add_argument("--demo", action="store_true", help="use the embedded demo data (offline)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    p.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--stride", type=int, help="tokens shared by consecutive windows of long documents")
    p.add_argument("--box-level", choices=("segment", "word"), help="segment (entity) or word boxes")
    p.add_argument("--on-bad-document", choices=("error", "skip"), help="stop on a bad document or skip it")
    p.add_argument("--lang", help="XFUND language (xfund, xfund-re): zh, ja, es, fr, it, de, pt or all")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=10")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.train.runner import finetune

    overrides = demo_overrides(args.task) if args.demo else []
    for flag, key in (("bf16", "train.bf16"), ("seed", "train.seed"), ("stride", "data.stride"),
                      ("box_level", "data.box_level"), ("on_bad_document", "data.on_bad_document"),
                      ("lang", "data.lang")):
        value = getattr(args, flag)
        if value not in (None, False):
            overrides.append(f"{key}={value}")
    overrides += args.overrides
    base = args.base or ("tiny" if args.demo else None)
    run_dir = finetune(
        args.task,
        recipe=args.recipe,
        strategy=args.strategy,
        base=base,
        data=args.data,
        output=args.output,
        demo=args.demo,
        resume=args.resume,
        overrides=overrides,
    )
    metrics_path = Path(run_dir) / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        keys = ("f1", "precision", "recall", "accuracy", "macro_f1", "anls", "exact_match")
        headline = {k: metrics[k] for k in keys if k in metrics}
        print(json.dumps({"run_dir": str(run_dir), **headline}, indent=2))
    return 0
