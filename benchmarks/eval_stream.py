"""Memory of scoring a split, streamed (issue 24) against collecting every output and record first.

Each configuration runs in a fresh process: N generated token-labelling pages of ``--words`` words (one window
each, the FUNSD label set) are built, the peak RSS is reset (``/proc/self/clear_refs``), the split is scored
with a stand-in model (an embedding from token ids to label logits, so that the model costs nothing) and
``predictions.jsonl`` is written, and the growth of the peak RSS over the RSS before scoring is reported, up
to the metric (prediction, merging, records: what streaming bounds) and with the metric (seqeval's own work over
every word of the split, the same in both paths).

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


def hwm_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))


# the peak up to the metric (prediction, merging, records) apart from the metric's own (seqeval over every word)
from aetnet.metrics import entity_scores
from aetnet.tasks.base import TokenScorer

entity_scores([["B-QUESTION"]], [["B-QUESTION"]])  # seqeval and what it imports are loaded before measuring
seen = {}
real_metrics = TokenScorer.metrics


def spied_metrics(self):
    seen["before_metric"] = hwm_kib()
    return real_metrics(self)


TokenScorer.metrics = spied_metrics
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
print(json.dumps({"growth_kib": hwm_kib() - before, "before_metric_kib": seen["before_metric"] - before,
                  "f1": metrics["f1"]}))
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
    print(f"| path | phase | peak RSS growth, {small:,} docs | {large:,} docs | per document |")
    print("|---|---|---|---|---|")
    for mode, by_n in figures.items():
        for key, phase in (("before_metric_kib", "predict, merge, records"), ("growth_kib", "with the metric")):
            slope = (by_n[large][key] - by_n[small][key]) / (large - small)
            print(f"| {mode} | {phase} | {by_n[small][key] / 1024:.1f} MiB | {by_n[large][key] / 1024:.1f} MiB "
                  f"| {slope:.2f} KiB |")
    assert figures["streamed"][large]["f1"] == figures["collected"][large]["f1"], "the two paths disagree"
    for key, phase in (("before_metric_kib", "up to the metric"), ("growth_kib", "with the metric")):
        ratio = figures["streamed"][large][key] / max(1, figures["collected"][large][key])
        print(f"streamed / collected peak growth {phase} at {large:,} documents: {ratio:.3f} (same f1)")


if __name__ == "__main__":
    main()
