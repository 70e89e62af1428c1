"""``aetnet evaluate MODEL_DIR``: score a saved model on a dataset's evaluation split."""

from __future__ import annotations

import argparse
import json

from aetnet.cli.model_flags import add_model_arg, hub_folders
from aetnet.cli.run_flags import add_data_flag, add_overrides, add_setting_flags, setting_overrides

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
    add_model_arg(p)
    add_data_flag(p)
    p.add_argument("--demo", action="store_true", help="evaluate on the embedded demo data")
    p.add_argument("--output", help="folder for metrics.json, predictions.jsonl (and skipped.jsonl)")
    add_setting_flags(p, "--on-bad-document", "--lang")
    add_overrides(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    (model,) = hub_folders(args.revision, args.model)  # a wrong Hub id fails before PyTorch is imported
    from aetnet.inference.evaluation import evaluate_model

    overrides = list(args.overrides) + setting_overrides(args, "--on-bad-document", "--lang")  # the flag wins
    metrics = evaluate_model(model, args.data, args.output, demo=args.demo, overrides=overrides)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0
