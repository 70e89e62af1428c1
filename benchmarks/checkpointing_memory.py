"""Peak memory of one AET training step with and without ``train.gradient_checkpointing`` (CPU or GPU).

Base-shaped models as ``aet_step_cost.py`` (hidden 768, 12 heads, 3072-wide MLP in LayoutLMv3, the ViT
and RoBERTa, 224x224 images, 512 tokens, random weights), batch 4, fp32, the run's default SDPA
attention. Each configuration runs in its own fresh process (so one cannot inherit the other's
allocator cache) and does one forward + backward of the AET model:

* ``step peak``: the process's peak resident memory during the step above its resident memory just
  before it (model, batch, momentum copies and queues already there), read from the kernel's
  high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) on CPU, or
  ``torch.cuda.max_memory_allocated`` on a GPU. glibc is told to give every large block back at once
  (``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set as they do the CUDA allocator's
  count;
* ``gradients``: the bytes of the trainable parameters' gradients, which the backward pass creates in
  both configurations;
* ``activations``: step peak minus gradients: what the forward pass kept for the backward pass, plus
  the transient buffers of the largest backward operation;
* ``saved``: the bytes autograd saved for backward outside checkpointed regions (each storage once;
  weights, buffers and the queues left out), counted with
  ``torch.autograd.graph.saved_tensors_hooks``: an exact, allocator-independent figure.

It prints one row per configuration, then the ratios checkpointed / plain of the activation memory
and of the step time. A 12-layer base AET step at batch 4 holds several GB of activations: on a small
shared machine pass ``--layers 2,4`` and read the per-layer figures (the difference between the two
layer counts divided by 2) it prints as well.

    python benchmarks/checkpointing_memory.py                    # 12 layers, batch 4
    python benchmarks/checkpointing_memory.py --layers 2,4       # per-layer figures on a small machine
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(layers: int, batch: int, checkpointed: bool, device: str) -> dict:
    """One forward + backward of a base-shaped AET model in this process; the memory figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from aet_step_cost import Shapes, build, make_batch

    from aetnet.models.attention import set_attention
    from aetnet.models.checkpointing import set_activation_checkpointing

    torch.manual_seed(0)
    shapes = Shapes(hidden=768, heads=12, intermediate=3072, layers=layers, image=224, patch=16, length=512,
                    batch=batch)
    full, model = build(shapes, queue=4096)
    del full
    dev = torch.device(device)
    data, extra = make_batch(shapes, dev)
    model.to(dev).train()
    set_attention(model, "sdpa")
    layers_switched = set_activation_checkpointing(model) if checkpointed else 0
    held = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved = [0]

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in held:  # each storage once: several operations may save the same tensor
            held.add(storage.data_ptr())
            saved[0] += storage.nbytes()
        return t

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        before = _status("VmRSS")
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**data, **extra)
    out["loss"].backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status("VmHWM")
    seconds = time.perf_counter() - start
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    return {"layers": layers, "checkpointed": checkpointed, "layers_checkpointed": layers_switched,
            "step_peak": peak - before, "gradients": grads, "saved": saved[0], "seconds": seconds}


def run_child(layers: int, batch: int, checkpointed: bool, device: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--layers", str(layers), "--batch", str(batch),
           "--device", device] + (["--checkpointed"] if checkpointed else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="12", help="layers per model; several comma-separated (default 12)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--checkpointed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.layers), args.batch, args.checkpointed, args.device)))
        return
    counts = [int(n) for n in args.layers.split(",")]
    print(f"date {time.strftime('%Y-%m-%d')}; device {args.device} ({torch.get_num_threads()} threads); torch "
          f"{torch.__version__}; AET step (forward + backward), base shapes, batch {args.batch} x (512 text + 197 "
          "image tokens), fp32, SDPA")
    mib = 2**20
    print(f"{'layers':>6s} {'checkpointed':>12s} {'step peak MiB':>14s} {'gradients MiB':>14s} "
          f"{'activations MiB':>16s} {'saved MiB':>10s} {'step s':>7s}")
    results: dict[tuple[int, bool], dict] = {}
    for layers in counts:
        for checkpointed in (False, True):
            r = run_child(layers, args.batch, checkpointed, args.device)
            r["activations"] = r["step_peak"] - r["gradients"]
            results[(layers, checkpointed)] = r
            print(f"{layers:6d} {'yes' if checkpointed else 'no':>12s} {r['step_peak'] / mib:14.0f} "
                  f"{r['gradients'] / mib:14.0f} {r['activations'] / mib:16.0f} {r['saved'] / mib:10.0f} "
                  f"{r['seconds']:7.1f}")
    for layers in counts:
        plain, ckpt = results[(layers, False)], results[(layers, True)]
        print(f"{layers} layers, checkpointed / plain: activations {ckpt['activations'] / plain['activations']:.3f}x "
              f"(target <= 0.6), saved for backward {ckpt['saved'] / plain['saved']:.3f}x, step peak "
              f"{ckpt['step_peak'] / plain['step_peak']:.3f}x, time {ckpt['seconds'] / plain['seconds']:.2f}x")
    if len(counts) >= 2:
        lo, hi = min(counts), max(counts)
        est = {}
        for checkpointed in (False, True):
            a, b = results[(lo, checkpointed)], results[(hi, checkpointed)]
            per_layer = (b["saved"] - a["saved"]) / (hi - lo)
            est[checkpointed] = b["saved"] + per_layer * (12 - hi)
            print(f"{'checkpointed' if checkpointed else 'plain'}: saved for backward per layer (one layer of each of "
                  f"the 3 encoders) {per_layer / mib:.1f} MiB -> at 12 layers {est[checkpointed] / mib:.0f} MiB "
                  "(extrapolated)")
        plain_per_layer = (results[(hi, False)]["activations"] - results[(lo, False)]["activations"]) / (hi - lo)
        print(f"at 12 layers (extrapolated), saved for backward checkpointed / plain {est[True] / est[False]:.3f}x; "
              f"plain activations per layer (step peak) {plain_per_layer / mib:.0f} MiB")


if __name__ == "__main__":
    main()
