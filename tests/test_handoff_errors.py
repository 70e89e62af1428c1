"""Failures in the distributed hand-over and in the shared validation: every process still makes the same
collective calls (none is left waiting for a peer that gave up)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(script: str, tmp_path, envs: list[dict[str, str]], timeout: int = 180) -> list[subprocess.CompletedProcess]:
    """Run ``script`` as ranks 0, 1, ... (rank ``r`` with environment ``envs[r]``); their outcomes."""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(rank), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank, env in enumerate(envs)]
    outcomes = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a process was left waiting for its peers (collective calls out of step)")
        outcomes.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return outcomes


def _run_two(script: str, tmp_path, env_of) -> list[subprocess.CompletedProcess]:
    """Run ``script`` as ranks 0 and 1 (environment from ``env_of(rank)``); their outcomes."""
    return _run(script, tmp_path, [env_of(rank) for rank in range(2)])


#: One pair of processes (ranks 0 and 1 of one node) runs the cases of the first three tests in turn, in one
#: process group, each case's stderr after a line ``@@case NAME``; a case leaving the processes out of step
#: would leave the next one waiting (the run's timeout fails them all).
_HEADER = """
import json, os, sys
import torch.distributed as dist
from aetnet.train.distributed import local_main_first

rank, out = int(sys.argv[1]), sys.argv[2]
"""
_MARK = "@@case "


def _case(name: str, body: str) -> str:
    return f"\nprint({_MARK + name!r}, file=sys.stderr, flush=True)\n{body}\ndist.barrier()\n"


#: Ranks 0 and 1 of one node through local_main_first; {defs} defines PUBLISHED, what the main process sends.
_HAND_OVER = """
{defs}
with local_main_first("test") as node:
    if node.received is None:
        node.publish(PUBLISHED)
        got = "prepared here"
    else:
        got = node.received
dist.barrier()
json.dump({{"got": got}}, open(f"{{out}}/{case}-rank{{rank}}.json", "w"))
"""
_UNPICKLABLE = _HAND_OVER.format(case="unpicklable",
                                 defs='PUBLISHED = {"state": lambda: None}  # a local function cannot be pickled')


def _env(port: str, tmp_path):
    def env_of(rank: int) -> dict[str, str]:
        return dict(os.environ, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                    GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, AETNET_CACHE=str(tmp_path / "cache"),
                    OMP_NUM_THREADS="1")
    return env_of


@pytest.fixture(scope="module")
def three_cases(tmp_path_factory) -> tuple[list[subprocess.CompletedProcess], list[dict[str, str]], object]:
    """The outcomes of the pair of processes that ran the three cases, each process's stderr per case, and
    their folder."""
    out = tmp_path_factory.mktemp("handoff")
    script = _HEADER + "".join(_case(name, body) for name, body in (
        ("unpicklable", _UNPICKLABLE), ("unrebuildable", _UNREBUILDABLE), ("score", _SCORE)))
    script += "dist.destroy_process_group()\n"
    outcomes = _run_two(script, out, _env(str(_free_port()), out))
    stderr = []
    for proc in outcomes:
        parts = proc.stderr.split(_MARK)
        stderr.append({part.split("\n", 1)[0]: part.split("\n", 1)[-1] for part in parts[1:]})
    return outcomes, stderr, out


def test_what_cannot_be_sent_is_not_sent_and_the_others_prepare_the_data(three_cases):
    """The main process publishes an object that cannot be pickled: it warns and sends nothing (instead of
    failing inside the broadcast with rank 1 waiting in it); rank 1 prepares the data itself."""
    outcomes, stderr, tmp_path = three_cases
    for proc in outcomes:
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not hand the prepared data to the node's other processes" in stderr[0]["unpicklable"]
    results = [json.loads((tmp_path / f"unpicklable-rank{rank}.json").read_text()) for rank in range(2)]
    assert [r["got"] for r in results] == ["prepared here", "prepared here"]


_UNREBUILDABLE = _HAND_OVER.format(case="unrebuildable", defs="""
def _rebuild(value):
    if os.environ["RANK"] != "0":
        raise ValueError("this process cannot rebuild the object")  # e.g. a module missing here
    return value


class Prepared:
    def __reduce__(self):
        return (_rebuild, ("prepared",))


PUBLISHED = Prepared()
""")


def test_a_process_that_cannot_read_the_hand_over_prepares_the_data_itself(three_cases):
    """Rank 1 fails to rebuild what its node's main process sent: it logs it and prepares the data itself
    (as when nothing was handed over) instead of failing while the main process goes on to training."""
    outcomes, stderr, tmp_path = three_cases
    for proc in outcomes:
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not read the data prepared by the node's main process" in stderr[1]["unrebuildable"]
    results = [json.loads((tmp_path / f"unrebuildable-rank{rank}.json").read_text()) for rank in range(2)]
    assert [r["got"] for r in results] == ["prepared here", "prepared here"]


#: Run after the hand-over cases, in their process group (started by local_main_first from the environment).
_SCORE = """
from types import SimpleNamespace

import torch

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.windows import Window
from aetnet.inference import evaluation
from aetnet.inference.evaluation import EvalSet


class Scorer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, input_ids, attention_mask, bbox):
        return {"logits": input_ids.unsqueeze(-1).float() * self.w}


class Task:
    kind = "token"
    calls = 0

    def scorer(self, id2label):
        Task.calls += 1
        return Summer(broken=Task.calls == 1)


class Summer:
    def __init__(self, broken):
        self.broken, self.total, self.documents = broken, 0.0, 0

    def add(self, example, windows, outputs):
        if self.broken:
            raise ValueError("the metric broke")
        self.total += sum(float(o.sum()) for o in outputs)
        self.documents += 1
        return {"id": example, "windows": len(windows)}

    def metrics(self):
        return {"f1": self.total, "documents": self.documents}


evaluation.EVAL_CHUNK = 1  # one document a chunk: the processes gather once per document
cfg = resolve_config({"task": "funsd"})
processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0), image_processor=None)
windows = [Window(d, [0], [[0, 0, 0, 0]], [None], None) for d in (0, 0, 1)]  # two documents: windows 0-1, then 2
# rank 0 read the examples; rank 1 was handed the windows only (EvalSet.from_prepared)
if rank == 0:
    evalset = EvalSet(Task(), processor, ["d", "e"], cfg, ["O", "B-X"], distributed=True,
                      prepared=(windows, [None, None]))
else:
    evalset = EvalSet.from_prepared(Task(), processor, windows, [None, None], cfg, ["O", "B-X"])
evalset.dataset = [{"input_ids": torch.arange(1, n + 1), "attention_mask": torch.ones(n, dtype=torch.long),
                    "bbox": torch.zeros(n, 4, dtype=torch.long)} for n in (3, 2, 4)]
lines = []
try:
    evalset.score(Scorer())
    lines.append("no error")
except Exception as exc:
    lines.append(f"{type(exc).__name__}: {exc}")
records = []
metrics = evalset.score(Scorer(), records.append)  # the processes are still in step: the next evaluation works
lines.append(repr((metrics, records)))
open(f"{out}/score-rank{rank}.txt", "w").write("\\n".join(lines))
"""


def test_a_scoring_failure_on_the_first_process_reaches_the_others(three_cases):
    """Rank 0 scores the gathered outputs for everyone; when that fails it raises, and rank 1 (waiting for the
    metrics) raises too, naming the cause, instead of waiting in the broadcast until the timeout."""
    outcomes, _, tmp_path = three_cases
    for proc in outcomes:
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = ((tmp_path / f"score-rank{rank}.txt").read_text().splitlines() for rank in range(2))
    assert first[0] == "ValueError: the metric broke"
    assert second[0] == ("AetnetError: the first process could not score the validation split (ValueError: the "
                         "metric broke); see its log")
    # 1+2+3 + 1+2 + 1+2+3+4 = 19 per logit column, two columns; the records stay with rank 0
    assert first[1] == "({'f1': 38.0, 'documents': 2}, [{'id': 'd', 'windows': 2}, {'id': 'e', 'windows': 1}])"
    assert second[1] == "({'f1': 38.0, 'documents': 2}, [])"


_WHO = """
import json, os, sys
import torch.distributed as dist
from aetnet.train.distributed import local_main_first

rank, out = int(sys.argv[1]), sys.argv[2]
with local_main_first("test") as node:
    got = node.received
    if got is None:
        node.publish(f"prepared by rank {rank}")
dist.barrier()
json.dump({"got": got}, open(f"{out}/rank{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("layout", ["no local variables", "nodes without LOCAL_WORLD_SIZE"])
def test_launchers_that_leave_out_the_local_variables_still_hand_over_once_per_node(tmp_path, layout):
    """Processes agree on their nodes (GROUP_RANK, else the host) instead of each reading LOCAL_RANK /
    LOCAL_WORLD_SIZE on its own: without them every process took itself for its node's main one, or two
    nodes' main processes broadcast in one group, and the processes waited for each other forever."""
    port = str(_free_port())
    if layout == "no local variables":  # e.g. RANK/WORLD_SIZE set by hand in a batch script: one host, one node
        envs = [{"RANK": str(rank), "WORLD_SIZE": "2"} for rank in range(2)]
    else:  # two nodes of two processes, a launcher that sets GROUP_RANK and LOCAL_RANK only
        envs = [{"RANK": str(rank), "WORLD_SIZE": "4", "GROUP_RANK": str(rank // 2), "LOCAL_RANK": str(rank % 2)}
                for rank in range(4)]
    base = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")}
    envs = [{**base, **env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
             "AETNET_CACHE": str(tmp_path / "cache")} for env in envs]
    for proc in _run(_WHO, tmp_path, envs, timeout=120):
        assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads((tmp_path / f"rank{rank}.json").read_text())["got"] for rank in range(len(envs))]
    expected = [None, "prepared by rank 0"] + ([None, "prepared by rank 2"] if len(envs) == 4 else [])
    assert got == expected
