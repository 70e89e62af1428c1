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
validation.png and runs.csv into OUTPUT.
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
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.cli.finetune import demo_overrides
    from aetnet.compare import compare
    from aetnet.registry import STRATEGIES

    strategies = args.strategies
    if strategies is None:
        import aetnet.tuning  # noqa: F401  (registers the built-in strategies)

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
    return 0
