#!/usr/bin/env python3
"""Parity check of aetnet demo runs between two checkouts (issue 21, "Done when").

Runs, for each (task, strategy) combination, the same short demo fine-tuning with the
old and the new checkout (each through its own venv's `aetnet` script and its own
AETNET_CACHE), sequentially, then compares metrics.json (every shared key exactly, except
timing/memory keys) and predictions.jsonl (byte for byte), and prints a table.

Usage:
  python3 parity.py [--old OLD_CHECKOUT] [--new NEW_CHECKOUT] [--out /tmp/parity_runs]
                    [--only funsd:full,cord:aet] [--compare-only] [--rerun]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

COMBOS = (
    [("funsd", s) for s in ("full", "head", "lora", "prompt", "aet", "aet-lora")]
    + [(t, s) for t in ("cord", "rvl-cdip", "docvqa", "funsd-re") for s in ("full", "aet")]
    + [("rvl-cdip", "lora")]
)
OVERRIDES = [
    "train.max_steps=4",
    "data.max_train_documents=8",
    "data.max_eval_documents=4",
    "train.seed=0",
]
# Keys measured in time or bytes of the process: not compared.
TIMING = re.compile(
    r"(seconds|_s$|time|memory|_mb$|_bytes$|_gb$|per_second|samples_per|steps_per|flos|rss)",
    re.IGNORECASE,
)


def flatten(obj, prefix=""):
    """Nested dicts to {"a.b": value}."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def run_one(checkout: Path, cache: Path, task: str, strategy: str, out: Path, log: Path) -> tuple[int, float]:
    env = dict(os.environ)
    env["AETNET_CACHE"] = str(cache)
    env.pop("PYTHONPATH", None)
    cmd = [str(checkout / ".venv/bin/aetnet"), "finetune", task, "--demo", "--strategy", strategy,
           "--output", str(out), *OVERRIDES]
    if out.exists():
        shutil.rmtree(out)
    t0 = time.time()
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        # cwd outside both checkouts so neither source folder shadows the other
        rc = subprocess.call(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd="/tmp")
    return rc, time.time() - t0


def compare(old_dir: Path, new_dir: Path) -> dict:
    res = {"metrics_equal": None, "diff": [], "only_old": [], "only_new": [], "skipped": [],
           "pred_equal": None, "pred_note": ""}
    mo, mn = old_dir / "metrics.json", new_dir / "metrics.json"
    if not (mo.exists() and mn.exists()):
        res["pred_note"] = f"metrics.json missing: old={mo.exists()} new={mn.exists()}"
        return res
    fo, fn = flatten(json.loads(mo.read_text())), flatten(json.loads(mn.read_text()))
    res["only_old"] = sorted(set(fo) - set(fn))
    res["only_new"] = sorted(set(fn) - set(fo))
    for k in sorted(set(fo) & set(fn)):
        if TIMING.search(k):
            res["skipped"].append(k)
            continue
        if fo[k] != fn[k] or type(fo[k]) is not type(fn[k]):
            res["diff"].append((k, fo[k], fn[k]))
    res["metrics_equal"] = not res["diff"]
    po, pn = old_dir / "predictions.jsonl", new_dir / "predictions.jsonl"
    if po.exists() and pn.exists():
        bo, bn = po.read_bytes(), pn.read_bytes()
        res["pred_equal"] = bo == bn
        if bo != bn:
            lo, ln = bo.splitlines(), bn.splitlines()
            nd = sum(a != b for a, b in zip(lo, ln)) + abs(len(lo) - len(ln))
            res["pred_note"] = f"{nd} of {max(len(lo), len(ln))} lines differ"
    else:
        res["pred_note"] = f"predictions.jsonl: old={po.exists()} new={pn.exists()}"
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the old checkout (with its own .venv: aetnet installed -e from it)")
    ap.add_argument("--new", required=True, help="the new checkout (likewise)")
    ap.add_argument("--out", default="/tmp/parity_runs")
    ap.add_argument("--old-cache", default="/tmp/par_old_cache")
    ap.add_argument("--new-cache", default="/tmp/par_new_cache")
    ap.add_argument("--only", default="", help="comma list of task:strategy")
    ap.add_argument("--compare-only", action="store_true", help="compare existing run folders")
    ap.add_argument("--rerun", action="store_true", help="run even when metrics.json exists")
    ap.add_argument("--json", default="", help="write the results as JSON here")
    a = ap.parse_args()
    combos = COMBOS
    if a.only:
        want = [tuple(x.split(":")) for x in a.only.split(",")]
        combos = [c for c in COMBOS if c in want] + [c for c in want if c not in COMBOS]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task, strat in combos:
        dirs = {}
        rcs = {}
        for ver, checkout, cache in (("old", a.old, a.old_cache), ("new", a.new, a.new_cache)):
            d = out / ver / f"{task}-{strat}"
            dirs[ver] = d
            if a.compare_only or ((d / "metrics.json").exists() and not a.rerun):
                rcs[ver] = 0 if (d / "metrics.json").exists() else None
                continue
            d.parent.mkdir(parents=True, exist_ok=True)
            rc, dt = run_one(Path(checkout), Path(cache), task, strat, d, out / ver / f"{task}-{strat}.log")
            rcs[ver] = rc
            print(f"[{ver}] {task} {strat}: rc={rc} {dt:.0f}s", file=sys.stderr, flush=True)
        r = compare(dirs["old"], dirs["new"])
        r.update(task=task, strategy=strat, rc_old=rcs["old"], rc_new=rcs["new"])
        rows.append(r)
    sys.stderr.flush()
    print()
    print(f"{'task':<9} {'strategy':<9} {'rc o/n':<7} {'metrics eq':<10} {'pred eq':<7}  "
          "differing keys (old -> new); keys in one version only")
    for r in rows:
        me = {True: "yes", False: "NO", None: "n/a"}[r["metrics_equal"]]
        pe = {True: "yes", False: "NO", None: "n/a"}[r["pred_equal"]]
        notes = [f"{k}: {o!r} -> {n!r}" for k, o, n in r["diff"]]
        if r["only_old"]:
            notes.append("only old: " + ", ".join(r["only_old"]))
        if r["only_new"]:
            notes.append("only new: " + ", ".join(r["only_new"]))
        if r["pred_note"]:
            notes.append(r["pred_note"])
        print(f"{r['task']:<9} {r['strategy']:<9} {str(r['rc_old'])+'/'+str(r['rc_new']):<7} {me:<10} {pe:<7}  "
              + ("; ".join(notes) or "-"))
    skipped = sorted({k for r in rows for k in r["skipped"]})
    print("\nnot compared (timing/memory):", ", ".join(skipped) or "-")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=str))
    ok = all(r["metrics_equal"] and r["pred_equal"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
