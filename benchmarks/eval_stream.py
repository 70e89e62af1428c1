"""Memory of scoring a split, streamed (issue 24) against collecting every output and record first.

Each configuration runs in a fresh process: N generated token-labelling pages of ``--words`` words (one window
each, the FUNSD label set) are built, the peak RSS is reset (``/proc/self/clear_refs``), the split is scored
with a stand-in model (an embedding from token ids to label logits, so that the model costs nothing) and
``predictions.jsonl`` is written, and the growth of the peak RSS over the RSS before scoring is reported.

- ``streamed``: :meth:`aetnet.inference.evaluation.EvalSet.score` with a records writer (this branch's path:
  64 documents' outputs at a time, each record written as it is scored).
- ``collected``: the path before it: every window's outputs in one list (``predict_windows``), every record
  from ``Task.evaluate``, then ``predictions.jsonl`` written.

The slope is bytes of peak-RSS growth per document between the two sizes; the ratio compares the two paths
at the larger size, in one run of this script.

    python benchmarks/eval_stream.py --docs 500,4000 --words 300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys
from pathlib import Path
from types import SimpleNamespace

import torch

from aetnet.config.settings import resolve_config
from aetnet.data.documents.document import Document
from aetnet.data.documents.jsonl import write_jsonl
from aetnet.data.encoding.windows import Window
from aetnet.inference.evaluation import EvalSet, predict_windows, records_file
from aetnet.tasks.funsd import FunsdTask

mode, n, words, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
torch.manual_seed(0)
task = FunsdTask()
labels = task.label_list()
docs, windows = [], []
for i in range(n):
    docs.append(Document(id=f"d{i}", words=[f"w{k}" for k in range(words)], boxes=[[0, 0, 1, 1]] * words,
                         page_size=(10, 10), labels=[labels[k % len(labels)] for k in range(words)]))
    ids = [0] + [3 + (i * 7 + k) % 990 for k in range(words)] + [2]
    windows.append(Window(i, ids, [[0, 0, 0, 0]] * len(ids), [None, *range(words), None], None))


class StandIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(1000, len(labels))

    def forward(self, input_ids, attention_mask, bbox):
        return {"logits": self.table(input_ids)}


def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


model = StandIn()
cfg = resolve_config({"task": "funsd"}, None, ["train.eval_batch_size=8", "train.num_workers=0"])
processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=1), image_processor=None)
evalset = EvalSet(task, processor, docs, cfg, labels, prepared=(windows, docs))
before = rss_kib()
with open("/proc/self/clear_refs", "w") as fh:  # peak RSS (VmHWM) starts again from the current RSS
    fh.write("5")
if mode == "streamed":
    with records_file(out / "predictions.jsonl") as write:
        metrics = evalset.score(model, write)
else:
    outputs = predict_windows(model, evalset.dataset, 8, "token", 1)
    metrics, records = task.evaluate(docs, windows, outputs, dict(enumerate(labels)))
    write_jsonl(out / "predictions.jsonl", records)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"growth_kib": peak - before, "f1": metrics["f1"]}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default="500,4000", help="two split sizes, small,large")
    p.add_argument("--words", type=int, default=300, help="words (and tokens) per page")
    args = p.parse_args()
    small, large = (int(x) for x in args.docs.split(","))
    figures: dict[str, dict[int, dict]] = {"streamed": {}, "collected": {}}
    for mode in figures:
        for n in (small, large):
            with tempfile.TemporaryDirectory() as out:
                got = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(args.words), out],
                                     capture_output=True, text=True, check=True)
            figures[mode][n] = json.loads(got.stdout.strip().splitlines()[-1])
    print(f"| path | peak RSS growth, {small:,} docs | {large:,} docs | per document |")
    print("|---|---|---|---|")
    for mode, by_n in figures.items():
        slope = (by_n[large]["growth_kib"] - by_n[small]["growth_kib"]) / (large - small)
        print(f"| {mode} | {by_n[small]['growth_kib'] / 1024:.1f} MiB | {by_n[large]['growth_kib'] / 1024:.1f} MiB "
              f"| {slope:.2f} KiB |")
    assert figures["streamed"][large]["f1"] == figures["collected"][large]["f1"], "the two paths disagree"
    ratio = figures["streamed"][large]["growth_kib"] / max(1, figures["collected"][large]["growth_kib"])
    print(f"streamed / collected peak growth at {large:,} documents: {ratio:.3f} (same f1)")


if __name__ == "__main__":
    main()
