"""``aetnet inspect TASK --data PATH``: what a dataset holds, per split."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet inspect funsd --data ~/data/FUNSD --json
  aetnet inspect funsd --demo
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="count documents, words, entities, labels and tokens in a dataset",
        description="Read a dataset as finetune would and print per-split statistics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task")
    p.add_argument("--data", help="dataset folder, save_to_disk folder or hub id")
    p.add_argument("--demo", action="store_true", help="inspect the embedded demo data")
    p.add_argument("--base", default=None, help="tokenizer to count tokens with (default: tiny)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (data.max_length=...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.config import resolve_config
    from aetnet.models.tiny import resolve_base
    from aetnet.data.processor import load_processor
    from aetnet.train.runner import get_task

    cfg = resolve_config({}, {"task": args.task, "data": {"path": args.data}}, args.overrides)
    task = get_task(args.task)
    base = resolve_base(args.base or "tiny")[0]
    tokenizer = load_processor(base).tokenizer
    stats = task.statistics(task.load(cfg, demo=args.demo), tokenizer, cfg)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for split, values in stats.items():
            print(f"[{split}]")
            for key, value in values.items():
                print(f"  {key}: {value}")
    return 0
