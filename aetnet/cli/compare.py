"""``aetnet compare TASK``: run several tuning strategies with several seeds and tabulate the results."""

from __future__ import annotations

import argparse
import json

from aetnet.cli.model_flags import add_push_flags, check_push_flags
from aetnet.cli.run_flags import add_run_flags, run_base, run_overrides

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
    add_run_flags(p, output="comparison folder (default runs/compare-<task>)",
                  overrides="config overrides for every run, e.g. train.max_steps=10")
    p.add_argument("--strategies", default=None,
                   help="comma-separated strategies, e.g. full,aet,lora,prompt,head "
                   "(default: every registered one)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per strategy: 0..N-1 (default 3)")
    p.add_argument("--devices", help="run in parallel, one process per device: GPU ids such as 0,1,2,3 "
                   "(on CPU, the number of ids is the number of processes)")
    add_push_flags(p, "push the best model (best seed of the best strategy) with results.md/.csv/.png to this "
                   "Hugging Face model repository")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_push_flags(args)
    from aetnet.compare.runs import compare
    from aetnet.registry import STRATEGIES

    strategies = args.strategies
    if strategies is None:
        import aetnet.strategies  # noqa: F401  (registers the built-in strategies)

        strategies = STRATEGIES.names()
    out_dir = compare(
        args.task,
        strategies,
        seeds=args.seeds,
        data=args.data,
        base=run_base(args),
        demo=args.demo,
        output=args.output,
        overrides=run_overrides(args),
        devices=args.devices,
    )
    print(json.dumps({"output": str(out_dir), "results": str(out_dir / "results.md")}, indent=2))
    print((out_dir / "results.md").read_text(encoding="utf-8"))
    if args.push_to_hub:
        from aetnet.compare.hub import push_comparison

        url = push_comparison(out_dir, args.task, args.push_to_hub, private=args.private, revision=args.revision)
        print(f"pushed the best model and the comparison to {args.push_to_hub}: {url}")
    return 0
