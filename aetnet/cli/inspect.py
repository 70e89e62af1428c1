"""``aetnet inspect TASK --data PATH``: what a dataset holds, per split."""

from __future__ import annotations

import argparse
import json
import logging

from aetnet.cli.run_flags import add_data_flag, add_setting_flags

logger = logging.getLogger(__name__)

EPILOG = """examples:
  aetnet inspect funsd --data ~/data/FUNSD --json
  aetnet inspect funsd --demo
  aetnet inspect xfund --data ~/data/XFUND --lang all --json   # per language: forms, entities, words, links
  aetnet inspect cord --data ~/data/CORD --on-bad-document skip --skipped skipped.jsonl
  aetnet inspect cord --data ~/data/CORD --base microsoft/layoutlmv3-base --windows windows.jsonl
  aetnet inspect rvl-cdip --data ~/data/rvl-cdip --check     # read and check only, no token counts

--windows FILE writes exactly what the model is fed, one JSON line per window in document order:
{"split", "doc", "window", "input_ids", "tokens", "bbox", "word_bbox", ...} plus "labels" (one label
name or null per token) for token tasks, "label" for classification, "answer" (token span, or null
when the window does not hold it) for question answering.

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
    add_data_flag(p)
    p.add_argument("--demo", action="store_true", help="inspect the embedded demo data")
    p.add_argument("--base", default=None, help="tokenizer to count tokens with (default: tiny)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_setting_flags(p, "--on-bad-document", "--lang")
    p.add_argument("--check", action="store_true",
                   help="only read and check every document (no tokenizer, no token counts): print how many "
                        "documents were given, used and skipped")
    p.add_argument("--skipped", metavar="FILE", default=None,
                   help="write the skipped documents (split, id, source, reason) to FILE as JSON lines")
    p.add_argument("--windows", metavar="FILE.jsonl", default=None,
                   help="write every window (ids, tokens, boxes, labels) as JSON lines, in document order")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (data.max_length=...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import aetnet.tasks  # noqa: F401  (registers the built-in tasks; the trainer stack is not needed here)
    from aetnet.config.settings import resolve_config
    from aetnet.data.documents.screen import BadDocuments, screen_documents
    from aetnet.data.encoding.processor import load_processor
    from aetnet.models.tiny import resolve_base
    from aetnet.registry import TASKS

    data = {"path": args.data}
    if args.on_bad_document:
        data["on_bad_document"] = args.on_bad_document
    if args.lang:
        data["lang"] = args.lang
    cfg = resolve_config({}, {"task": args.task, "data": data}, args.overrides)
    task = TASKS.get(args.task)(partial=True)  # report what the folder holds (finetune names a missing file)
    needs_tokens = not args.check or args.windows
    base = args.base or "tiny"
    tokenizer = load_processor(resolve_base(base)[0]).tokenizer if needs_tokens else None
    policy = BadDocuments(cfg.data.on_bad_document)
    splits = {
        split: screen_documents(examples, task.documents(examples), split, cfg.data.box_level, task.kind == "token",
                                policy)
        for split, examples in task.load(cfg, demo=args.demo, bad_documents=policy).items()
    }
    summary = policy.summary({split: len(examples) for split, examples in splits.items()})
    logger.info("%s", summary.pop("message"))
    if args.skipped:
        policy.write(args.skipped)
    if args.windows:
        count = write_windows(task, splits, tokenizer, cfg, args.windows)
        logger.info("%d windows written to %s", count, args.windows)
    if args.check:
        stats = {"documents": summary, "splits": {split: len(examples) for split, examples in splits.items()}}
    else:
        stats = task.statistics(splits, tokenizer, cfg)
        stats["base"] = base_summary(base)  # the tokenizer's base, its family and the licence of its weights
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for split, values in stats.items():
            print(f"[{split}]")
            for key, value in values.items():
                print(f"  {key}: {value}")
    return 0


def base_summary(base: str) -> dict[str, str]:
    """The base the tokens were counted with: its name, family and licence (what a model fine-tuned from it
    inherits)."""
    from aetnet.bases import base_family, base_licence

    family = base_family(base)
    return {"name": base, "family": family.name if family else "unknown", "licence": base_licence(base).id}


def write_windows(task, splits: dict, tokenizer, cfg, path: str) -> int:
    """Write every window of every split to ``path`` as JSON lines, in document order.

    Args:
        task: the task (encodes the examples exactly as finetune does).
        splits: split name -> examples.
        tokenizer: the base's tokenizer.
        cfg: the run configuration (``data.max_length``, ``data.stride``, ``data.box_level``).
        path: the output file.

    Returns:
        The number of windows written.
    """
    labels = task.label_list(splits)
    label2id = {name: i for i, name in enumerate(labels)} if labels else None
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for split, examples in splits.items():
            windows = task.encode(examples, tokenizer, label2id, cfg)
            seen: dict[int, int] = {}
            for window in windows:
                index = seen[window.doc_index] = seen.get(window.doc_index, -1) + 1
                out.write(json.dumps(_window_record(split, examples[window.doc_index], index, window, tokenizer,
                                                    labels)) + "\n")
                count += 1
    return count


def _window_record(split: str, example, index: int, window, tokenizer, labels) -> dict:
    """One window as plain JSON types."""
    record = {"split": split, "doc": str(example.id), "window": index, "input_ids": list(window.input_ids),
              "tokens": tokenizer.convert_ids_to_tokens(list(window.input_ids)),
              "bbox": [list(b) for b in window.bbox], "word_ids": list(window.word_ids),
              "word_bbox": [list(b) for b in window.word_bbox] if window.word_bbox is not None else None}
    if hasattr(example, "document"):  # QA: the question's page
        record["page"] = str(example.document.id)
    if isinstance(window.labels, list):
        record["labels"] = [None if x < 0 else labels[x] for x in window.labels]
    elif isinstance(window.labels, int):
        record["label"] = labels[window.labels]
    if window.start_positions is not None:
        start, end = window.start_positions, window.end_positions
        record["answer"] = None if start == 0 else {
            "start": start, "end": end, "text": tokenizer.decode(window.input_ids[start:end + 1]).strip()}
    return record
