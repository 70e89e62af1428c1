"""benchmarks/gpu_check.py: the dry run lists every CUDA test and benchmark; a skipped CUDA test never
counts as passed; without a GPU the real run refuses."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.gpu_check import read_junit  # noqa: E402


def cuda_tests() -> list[str]:
    """The test functions of tests/test_cuda.py, read from its source (every one is marked cuda)."""
    tree = ast.parse((ROOT / "tests" / "test_cuda.py").read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def test_dry_run_lists_every_check():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in cuda_tests():
        assert f"tests/test_cuda.py::{name}" in proc.stdout, name
    assert len(cuda_tests()) >= 7
    assert "-m cuda" in proc.stdout
    assert "benchmarks/aet_step_cost.py --batch 16" in proc.stdout and "benchmarks/data_wait.py" in proc.stdout
    assert "markdown table" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="describes a machine without a CUDA GPU")
def test_without_a_gpu_the_check_refuses(capsys):
    from benchmarks.gpu_check import main

    # in this process, which has PyTorch imported already (a process of its own would only import it again)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "--dry-run" in err


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="{f}"
skipped="{s}" tests="3"><testcase classname="tests.test_cuda" name="test_a"/>{cases}</testsuite></testsuites>"""


@pytest.mark.parametrize(("failures", "skipped", "cases", "want"), [
    (0, 0, '<testcase name="test_b"/><testcase name="test_c"/>', "passed"),
    (0, 1, '<testcase name="test_b"/><testcase name="test_c"><skipped message="needs a CUDA GPU"/></testcase>',
     "NOT PASSED (skipped)"),
    (1, 0, '<testcase name="test_b"/><testcase name="test_c"><failure message="x"/></testcase>', "FAILED"),
])
def test_a_skipped_cuda_test_is_not_a_pass(tmp_path, failures, skipped, cases, want):
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT.format(f=failures, s=skipped, cases=cases))
    status, figures = read_junit(path)
    assert status == want
    assert figures[0] == f"{3 - failures - skipped} passed, {failures} failed, {skipped} skipped of 3"
    if skipped:
        assert figures[1].startswith("skipped: test_c (needs a CUDA GPU")
