"""``aetnet evaluate MODEL_DIR``: score a saved model on a dataset's evaluation split."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet evaluate runs/funsd-full/model --data ~/data/FUNSD
  aetnet evaluate runs/funsd-full/model --demo --output eval-out
  aetnet evaluate OWNER/NAME --revision v2 --data ~/data/FUNSD     # a model on the Hugging Face Hub
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a saved model folder on a dataset",
        description="Load RUN/model (written by finetune) and compute the task metric on the evaluation split.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model folder (RUN/model), run folder or Hub id OWNER/NAME")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")
    p.add_argument("--data", help="dataset folder, save_to_disk folder or hub id")
    p.add_argument("--demo", action="store_true", help="evaluate on the embedded demo data")
    p.add_argument("--output", help="folder for metrics.json, predictions.jsonl (and skipped.jsonl)")
    p.add_argument("--on-bad-document", choices=("error", "skip"), default=None,
                   help="stop at the first bad document (default) or skip it, list it and go on")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.inference.evaluation import evaluate_model

    overrides = list(args.overrides)
    if args.on_bad_document:
        overrides.append(f"data.on_bad_document={args.on_bad_document}")
    metrics = evaluate_model(args.model, args.data, args.output, demo=args.demo, overrides=overrides,
                             revision=args.revision)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0
