"""Share of a training step spent waiting for data: the real loading path against a base-size step.

Feeds base-shaped models (the random-weight models of ``aet_step_cost.py``: nothing is downloaded)
from the real data path: CORD-format receipts of the demo generator, encoded windows padded to 512
tokens, pages decoded and resized to 224x224 in ``WindowDataset``, AET's I+ view built per item
(``AETViews``), the training ``Collator`` (with word boxes), ``train.num_workers`` persistent
DataLoader workers and pinned memory on a GPU, as the trainer sets them up. For full fine-tuning and
for AET it times each step's wait for its batch (``next()`` on the loader) and the step itself
(forward, backward, fused AdamW, the EMA update for AET; bf16 autocast on a GPU that has it), and
prints the wait as a share of the step (issue 12's target on a GPU: under 5 %).

    python benchmarks/data_wait.py                       # GPU: base shapes, batch 8, min(8, cores) workers
    python benchmarks/data_wait.py --tiny --steps 6      # CPU check of the script itself (small shapes)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aet_step_cost import VOCAB, Shapes, _commit, build, dense_bf16_peak, step_fn, sync  # noqa: E402

from aetnet.train.efficiency import apply_tf32, resolve_bf16, resolve_tf32  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small shapes (a CPU check of the script)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, help="DataLoader workers (default: the trainer's, min(8, cores))")
    p.add_argument("--steps", type=int, default=30, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (worker start, allocator, kernels)")
    p.add_argument("--receipts", type=int, default=64, help="demo receipts generated (items repeat beyond them)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


def dataset(work: Path, receipts: int, image: int, aet: bool):
    """The training dataset of CORD-format receipts as a run builds it; (dataset, collator)."""
    from aetnet.config.settings import resolve_config
    from aetnet.data.demo import make_cord_demo
    from aetnet.data.encoding.processor import load_processor
    from aetnet.data.encoding.windows import Collator, WindowDataset
    from aetnet.inference.modelio import get_strategy, get_task
    from aetnet.models.tiny import resolve_base

    processor = load_processor(resolve_base("tiny")[0])
    processor.image_processor.size = {"height": image, "width": image}
    strategy = "aet" if aet else "full"
    cfg = resolve_config({}, {"task": "cord", "strategy": strategy, "data": {"path": str(work / "cord")}}, [])
    if not (work / "cord").is_dir():
        make_cord_demo(work / "cord", n_train=receipts, n_test=2)
    task = get_task("cord")
    docs = task.load(cfg)["train"]
    label2id = {label: i for i, label in enumerate(task.label_list())}
    windows = task.encode(docs, processor.tokenizer, label2id, cfg)
    views = get_strategy(strategy).extra_views(cfg, processor)
    return (WindowDataset(windows, docs, processor.image_processor, views),
            Collator(processor.tokenizer.pad_token_id, pad_to_multiple_of=512, word_boxes=True))


def run(model, loader, is_aet: bool, args, device: torch.device, bf16: bool) -> dict[str, float]:
    """Mean wait for a batch and mean step time over ``args.steps`` steps after ``args.warmup``."""
    model.to(device).train()
    params = model.optimizer_param_groups(0.01) if is_aet else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batches = iter(loader)
    waits, steps = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:  # a new epoch (persistent workers carry on)
            batches = iter(loader)
            batch = next(batches)
        t1 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch["labels"] = torch.where(batch["labels"] >= 0, batch["labels"] % 7, batch["labels"])  # 7-label head
        if not is_aet:
            batch = {k: v for k, v in batch.items() if k not in ("aug_pixel_values", "word_bbox")}
        step_fn(model, batch, optimizer, is_aet, bf16, device)()  # forward, backward, AdamW (+ EMA for AET)
        sync(device)
        if i >= args.warmup:
            waits.append(t1 - t0)
            steps.append(time.perf_counter() - t0)
    return {"wait": sum(waits) / len(waits), "step": sum(steps) / len(steps)}


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    from aetnet.data.encoding.windows import data_workers

    workers = args.workers if args.workers is not None else data_workers(None)
    tiny = args.tiny
    shapes = Shapes(hidden=64 if tiny else 768, heads=2 if tiny else 12, intermediate=128 if tiny else 3072,
                    layers=1 if tiny else 12, image=64 if tiny else 224, patch=16, length=512, batch=args.batch,
                    vocab=VOCAB)
    bf16 = resolve_bf16(None) if device.type == "cuda" else False
    apply_tf32(resolve_tf32(None) if device.type == "cuda" else False)
    name, _ = dense_bf16_peak(device)
    print(f"date {time.strftime('%Y-%m-%d')}; commit {_commit()}; device {name}; torch {torch.__version__}; "
          f"{workers} persistent DataLoader worker(s); batch {args.batch} x 512 tokens, {shapes.image}x{shapes.image} "
          f"pages; {'bf16 autocast' if bf16 else 'fp32'}; {shapes.layers} layers x hidden {shapes.hidden}")
    torch.manual_seed(0)
    full, aet = build(shapes, 4096)
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, is_aet in (("full", full, False), ("AET", aet, True)):
            data, collate = dataset(Path(tmp), args.receipts, shapes.image, is_aet)
            loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True,
                                                 num_workers=workers, persistent_workers=workers > 0,
                                                 pin_memory=device.type == "cuda", collate_fn=collate)
            r = run(copy.deepcopy(model), loader, is_aet, args, device, bf16)
            print(f"{label:5s} step {r['step'] * 1e3:8.1f} ms, waiting for data {r['wait'] * 1e3:7.1f} ms: "
                  f"{100 * r['wait'] / r['step']:5.1f} % of the step (target on a GPU: < 5 %)")


if __name__ == "__main__":
    main()
