"""One command for the first lent GPU: the CUDA tests, the AET step cost and the data wait, one table.

    python -m benchmarks.gpu_check            # on a CUDA machine, from the repository root (<= 8 minutes)
    python -m benchmarks.gpu_check --dry-run  # anywhere: list what it would run, run nothing

In order, each with its own time limit (together within the 8-minute budget):

1. ``pytest -m cuda tests/test_cuda.py``: every test marked ``cuda`` (bf16 AET step against fp32,
   inductor-compiled against eager, activation checkpointing in bf16, pinned-memory persistent
   workers, a one-GPU DDP step over NCCL, predict and serve on CUDA). A test that is skipped counts
   as not passed: on a GPU machine nothing may skip;
2. ``benchmarks/aet_step_cost.py --batch 16``: step time, MFU and the AET/full time and FLOP ratios,
   eager and compiled;
3. ``benchmarks/data_wait.py``: the share of a base-size step spent waiting for its batch;

then it prints one markdown table (device, CUDA, torch and transformers versions, date, commit, and
each check's outcome and figures), ready to paste into ``benchmarks/README.md``, and exits non-zero
when a check failed, was skipped or ran out of time. Without a CUDA GPU it refuses to run (only
``--dry-run`` works there).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480


@dataclass
class Check:
    """One step of the check: a command, its time limit and how to read its figures."""

    name: str
    command: list[str]
    timeout_s: int
    status: str = "not run"
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tail: str = ""


def checks(junit: Path) -> list[Check]:
    py = sys.executable
    return [
        Check("CUDA tests (pytest -m cuda)", [py, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
                                              f"--junitxml={junit}", "tests/test_cuda.py"], 180),
        Check("AET step cost (batch 16)", [py, "benchmarks/aet_step_cost.py", "--batch", "16"], 210),
        Check("data wait", [py, "benchmarks/data_wait.py"], 90),
    ]


def read_junit(path: Path) -> tuple[str, list[str]]:
    """(status, figures) of a pytest run from its JUnit XML: passed only when every test passed."""
    if not path.is_file():
        return "failed (no test report)", []
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    passed = total - failures - errors - skipped
    figures = [f"{passed} passed, {failures + errors} failed, {skipped} skipped of {total}"]
    for case in suite.iter("testcase"):
        if case.find("skipped") is not None:
            figures.append(f"skipped: {case.get('name')} ({case.find('skipped').get('message', '')[:80]})")
        elif case.find("failure") is not None or case.find("error") is not None:
            figures.append(f"failed: {case.get('name')}")
    ok = total > 0 and passed == total
    return ("passed" if ok else "FAILED" if failures + errors else "NOT PASSED (skipped)"), figures


def step_cost_figures(out: str) -> list[str]:
    """The step-time rows and ratio lines of ``aet_step_cost.py``."""
    rows = [line.strip() for line in out.splitlines()
            if re.match(r"^(full|AET)\s+(yes|no)\s", line) or line.startswith("AET / full")]
    return [re.sub(r"\s+", " ", r) for r in rows]


def data_wait_figures(out: str) -> list[str]:
    """The per-model lines of ``data_wait.py`` (step time, time waiting for data and its share)."""
    return [re.sub(r"\s+", " ", line.strip()) for line in out.splitlines() if "waiting for data" in line]


def environment() -> dict[str, str]:
    import torch
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device,
            "CUDA": str(torch.version.cuda), "torch": torch.__version__, "transformers": transformers.__version__,
            "commit": (commit.stdout.strip() or "unknown") + (" (uncommitted changes)" if dirty else "")}


def table(env: dict[str, str], done: list[Check]) -> str:
    lines = ["| item | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    for check in done:
        figures = "<br>".join(f.replace("|", "/") for f in check.figures) or "-"
        lines.append(f"| {check.name} | **{check.status}** ({check.seconds:.0f} s): {figures} |")
    return "\n".join(lines)


def run(check: Check, junit: Path) -> None:
    start = time.perf_counter()
    try:
        proc = subprocess.run(check.command, cwd=ROOT, capture_output=True, text=True, timeout=check.timeout_s)
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        code = None
    check.seconds = time.perf_counter() - start
    check.tail = out[-2000:]
    if check.command[-1].endswith("test_cuda.py"):
        check.status, check.figures = read_junit(junit)
    elif "aet_step_cost" in check.command[1]:
        check.figures = step_cost_figures(out)
    else:
        check.figures = data_wait_figures(out)
    if code is None:
        check.status = f"TIMED OUT after {check.timeout_s} s"
    elif code != 0 and check.status in ("not run", "passed"):
        check.status = f"FAILED (exit {code})"
    elif check.status == "not run":
        check.status = "done"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the checks and their time limits; run nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        plan = checks(Path("TMP") / "cuda-tests.xml")
        print(f"python -m benchmarks.gpu_check would run, from {ROOT}, within {BUDGET_S} s:")
        for i, check in enumerate(plan, 1):
            print(f"{i}. {check.name} (limit {check.timeout_s} s): python {' '.join(check.command[1:])}")
        print("CUDA tests it would run (tests marked cuda):")
        listing = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "--collect-only", "-q",
                                  "-p", "no:cacheprovider", "tests/test_cuda.py"], cwd=ROOT, capture_output=True,
                                 text=True)
        print("\n".join(f"   {line}" for line in listing.stdout.splitlines() if "::" in line))
        print("then: one markdown table (device, CUDA, torch, transformers, date, commit, each check's figures)")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("benchmarks.gpu_check needs a CUDA GPU (torch.cuda.is_available() is False); "
              "use --dry-run to list the checks on this machine", file=sys.stderr)
        return 2
    junit = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "cuda-tests.xml"
    plan = checks(junit)
    assert sum(c.timeout_s for c in plan) <= BUDGET_S
    for check in plan:
        print(f"== {check.name}: {' '.join(check.command[1:])}", flush=True)
        run(check, junit)
        print(f"   {check.status} in {check.seconds:.0f} s", flush=True)
        if check.status not in ("passed", "done"):
            print(check.tail, flush=True)
    shutil.rmtree(junit.parent, ignore_errors=True)
    print()
    print(table(environment(), plan))
    return 0 if all(c.status in ("passed", "done") for c in plan) else 1


if __name__ == "__main__":
    sys.exit(main())
