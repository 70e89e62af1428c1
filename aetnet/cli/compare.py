"""``aetnet compare TASK``: run several tuning strategies with several seeds and tabulate the results."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet compare funsd --strategies full,lora,prompt,head --seeds 2 --demo
  aetnet compare funsd --strategies full,aet,lora,prompt,head --seeds 3 \\
      --base microsoft/layoutlmv3-base --data ~/data/FUNSD --output runs/compare-funsd
  aetnet compare funsd --strategies full,lora --demo train.max_steps=20   # key=value applies to every run
  aetnet compare funsd --strategies full,aet,lora --seeds 4 --devices 0,1,2,3 \\
      --base microsoft/layoutlmv3-base --data ~/data/FUNSD train.eval_steps=100 train.keep=best

Runs go to OUTPUT/<strategy>/seed<k> (train.seed=k). Finished runs (metrics.json present) are
skipped, so the same command resumes an interrupted comparison. --devices runs them as a queue,
one process per device (logs in OUTPUT/logs). Writes results.csv, results.md, results.png,
validation.png and runs.csv into OUTPUT. --push-to-hub OWNER/NAME then pushes the best model (the
best seed of the strategy with the best mean) with those files in comparison/ and the table in its card.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare tuning strategies (metric, parameters, speed, memory) over seeds",
        description="Fine-tune one task with several strategies and seeds on the same data, base and "
        "budget; write the mean and std of the task metric per strategy with its costs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", help="task name, e.g. funsd")
    p.add_argument("--strategies", default=None,
                   help="comma-separated strategies, e.g. full,aet,lora,prompt,head "
                   "(default: every registered one)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per strategy: 0..N-1 (default 3)")
    p.add_argument("--data", help="dataset folder, save_to_disk folder or hub id")
    p.add_argument("--base", help="LayoutLMv3 hub id or folder, or 'tiny' (the default with --demo)")
    p.add_argument("--demo", action="store_true", help="embedded demo data, tiny base, short schedule")
    p.add_argument("--output", help="comparison folder (default runs/compare-<task>)")
    p.add_argument("--devices", help="run in parallel, one process per device: GPU ids such as 0,1,2,3 "
                   "(on CPU, the number of ids is the number of processes)")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME",
                   help="push the best model (best seed of the best strategy) with results.md/.csv/.png to this "
                   "Hugging Face model repository")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.add_argument("--revision", help="with --push-to-hub: the branch to push to (default main)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.errors import AetnetError

    if (args.private or args.revision) and not args.push_to_hub:
        raise AetnetError("--private and --revision apply to --push-to-hub OWNER/NAME; add it or drop them")
    from aetnet.cli.finetune import demo_overrides
    from aetnet.compare.runs import compare
    from aetnet.registry import STRATEGIES

    strategies = args.strategies
    if strategies is None:
        import aetnet.strategies  # noqa: F401  (registers the built-in strategies)

        strategies = STRATEGIES.names()
    overrides = (demo_overrides(args.task) if args.demo else []) + list(args.overrides)
    out_dir = compare(
        args.task,
        strategies,
        seeds=args.seeds,
        data=args.data,
        base=args.base or ("tiny" if args.demo else None),
        demo=args.demo,
        output=args.output,
        overrides=overrides,
        devices=args.devices,
    )
    print(json.dumps({"output": str(out_dir), "results": str(out_dir / "results.md")}, indent=2))
    print((out_dir / "results.md").read_text(encoding="utf-8"))
    if args.push_to_hub:
        from aetnet.compare.hub import push_comparison

        url = push_comparison(out_dir, args.task, args.push_to_hub, private=args.private, revision=args.revision)
        print(f"pushed the best model and the comparison to {args.push_to_hub}: {url}")
    return 0
