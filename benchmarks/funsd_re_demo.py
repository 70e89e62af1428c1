"""``aetnet finetune funsd-re --demo`` per strategy: link F1 against chance, and wall time.

Usage::

    python benchmarks/funsd_re_demo.py --strategies full,lora --output runs/funsd-re-demo

Each strategy trains on the synthetic forms with the ``--demo`` settings (tiny offline model,
600 steps) and is scored on the 24 test forms. Chance precision is gold links / candidate pairs
(every candidate predicted as a link); the printed ratio is F1 over the F1 of that chance predictor.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="full", help="comma-separated strategies (default full)")
    parser.add_argument("--output", default="runs/funsd-re-demo", help="folder for one run per strategy")
    args = parser.parse_args()

    from aetnet.cli.run_flags import demo_overrides
    from aetnet.train.runner import finetune

    print("| strategy | F1 | P | R | chance F1 | F1 / chance | wall s | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        start = time.perf_counter()
        run = finetune("funsd-re", strategy=strategy, base="tiny", demo=True,
                       output=Path(args.output) / strategy, overrides=demo_overrides("funsd-re"))
        wall = time.perf_counter() - start
        m = json.loads((run / "metrics.json").read_text())
        chance_p = m["gold_links"] / max(1, m["candidate_pairs"])
        chance_f1 = 2 * chance_p / (chance_p + 1)
        print(f"| {strategy} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {chance_f1:.3f} | "
              f"{m['f1'] / chance_f1:.2f}x | {wall:.0f} | {m['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
