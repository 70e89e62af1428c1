"""``aetnet inspect TASK --data PATH``: what a dataset holds, per split."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)

EPILOG = """examples:
  aetnet inspect funsd --data ~/data/FUNSD --json
  aetnet inspect funsd --demo
  aetnet inspect cord --data ~/data/CORD --on-bad-document skip --skipped skipped.jsonl

Every document is read and checked as finetune would (fields, boxes, images): a bad one stops the
command with exit status 2 and one line naming the file, the field and the fix; with
--on-bad-document skip it is listed (in --skipped, when given) and the others are counted.
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
    p.add_argument("--on-bad-document", choices=("error", "skip"), default=None,
                   help="stop at the first bad document (default) or skip it and go on, as finetune does")
    p.add_argument("--skipped", metavar="FILE", default=None,
                   help="write the skipped documents (split, id, source, reason) to FILE as JSON lines")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (data.max_length=...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.config import resolve_config
    from aetnet.data.processor import load_processor
    from aetnet.data.screen import BadDocuments, screen_documents
    from aetnet.models.tiny import resolve_base
    from aetnet.train.runner import get_task

    data = {"path": args.data}
    if args.on_bad_document:
        data["on_bad_document"] = args.on_bad_document
    cfg = resolve_config({}, {"task": args.task, "data": data}, args.overrides)
    task = get_task(args.task)
    base = resolve_base(args.base or "tiny")[0]
    tokenizer = load_processor(base).tokenizer
    policy = BadDocuments(cfg.data.on_bad_document)
    task.bad_documents = policy
    splits = {
        split: screen_documents(examples, task.documents(examples), split, cfg.data.box_level, task.kind == "token",
                                policy)
        for split, examples in task.load(cfg, demo=args.demo).items()
    }
    stats = task.statistics(splits, tokenizer, cfg)
    logger.info("%s", policy.summary({split: len(examples) for split, examples in splits.items()})["message"])
    if args.skipped:
        policy.write(args.skipped)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for split, values in stats.items():
            print(f"[{split}]")
            for key, value in values.items():
                print(f"  {key}: {value}")
    return 0
