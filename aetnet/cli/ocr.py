"""``aetnet ocr TASK --data PATH``: fill the OCR cache ahead of training, in parallel, resumably."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet ocr rvl-cdip --data ~/data/rvl-cdip                  # every core
  aetnet ocr rvl-cdip --data ~/data/rvl-cdip --workers 8 data.ocr_psm=6
  aetnet ocr docvqa --data ~/data/docvqa                      # pages without official OCR files
  # four machines sharing the cache folder ($AETNET_CACHE), one quarter each:
  aetnet ocr rvl-cdip --data /shared/rvl-cdip --shard 0/4     # ... --shard 3/4

A killed run started again continues where it stopped: finished pages are read from the cache,
never given to Tesseract twice. finetune, evaluate and predict then find every page cached.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ocr",
        help="recognise a dataset's pages into the OCR cache (parallel, resumable, shardable)",
        description="Run Tesseract over every page of a dataset that has no words of its own (rvl-cdip; docvqa "
                    "pages without official OCR files) and store the results in the OCR cache, with the "
                    "settings finetune will use (data.ocr_lang, data.ocr_psm).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task")
    p.add_argument("--data", help="dataset folder or save_to_disk folder")
    p.add_argument("--demo", action="store_true", help="the embedded demo data")
    p.add_argument("--workers", type=int, default=0, help="OCR processes (default 0: every available core)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="recognise only shard I of N (every N-th page from the I-th); shards are disjoint")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides (data.ocr_lang=deu, data.ocr_psm=6, data.on_bad_document=skip)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.config.settings import resolve_config
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.data.ocr.pool import PageOcr, parse_shard, recognise_dataset
    from aetnet.errors import DataError
    from aetnet.inference.modelio import get_task

    index, count = parse_shard(args.shard)
    cfg = resolve_config({}, {"task": args.task, "data": {"path": args.data}}, args.overrides)
    pages, settings, results = recognise_dataset(get_task(args.task), cfg, args.demo, args.workers, index, count)
    policy = BadDocuments(cfg.data.on_bad_document)
    for (name, page), result in zip(pages, results):
        if isinstance(result, DataError):
            policy.handle(result, "ocr", name, str(page))
    summary = {
        "task": args.task,
        "shard": f"{index}/{count}",
        "pages": len(pages),
        "recognised": sum(1 for r in results if isinstance(r, PageOcr) and not r.cached),
        "cached": sum(1 for r in results if isinstance(r, PageOcr) and r.cached),
        "bad": policy.records,
        "ocr": settings.as_dict(),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['pages']} page(s) in shard {index}/{count}: {summary['recognised']} recognised, "
              f"{summary['cached']} already cached, {len(policy.records)} bad")
        for record in policy.records:
            print(f"  bad: {record['source']}: {record['reason']}")
    return 0
