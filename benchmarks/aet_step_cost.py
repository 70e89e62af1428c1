"""Cost of an AET training step against full fine-tuning: time, throughput, TFLOP/s, MFU, memory.

Builds base-shaped models (hidden 768, 12 heads, 12 layers in LayoutLMv3, the ViT and RoBERTa,
224x224 images, 512 tokens; random weights, so nothing is downloaded) and on the same batch times
training steps of

* full fine-tuning: ``LayoutLMv3ForTokenClassification`` forward + backward + fused AdamW step;
* AET: :class:`aetnet.strategies.aet.model.AETNetModel` forward (aligners, fused LayoutLMv3, momentum
  encoders, the four losses) + backward + fused AdamW step + the fused EMA update;

each eager and again with ``torch.compile`` of the encoders (as ``train.compile`` does), the two
models' steps alternating (full, AET, full, AET, ...) so that a change of load hits both, in bf16
autocast on GPUs that support it (fp32 on CPU), with the run's attention default (SDPA) and TF32
default. For each it prints the step time, tokens per second (text + image tokens), the achieved
TFLOP/s (forward + backward FLOPs counted once with ``torch.utils.flop_counter`` on the eager-attention
model, where every attention matmul is visible) and the model FLOPs utilisation (MFU) against the
device's dense bf16 peak from the table printed at the top, and the peak memory (CUDA). It also
prints the AET/full time ratio next to the FLOP ratio (target: time ratio <= FLOP ratio).

    python benchmarks/aet_step_cost.py --tiny                 # CPU, small shapes, about a minute
    python benchmarks/aet_step_cost.py --batch 16             # GPU, base shapes, bf16
    python benchmarks/aet_step_cost.py --batch 16 --no-compile --terms
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    LayoutLMv3Config,
    LayoutLMv3ForTokenClassification,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
)

from aetnet.models.attention import freeze_gradless_tables, set_attention
from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.aet.losses import ditc_loss, glitc_loss, imc_loss
from aetnet.strategies.aet.model import AETNetModel
from aetnet.strategies.aet.pita import pita_loss
from aetnet.train.efficiency import apply_tf32, compile_encoders, resolve_bf16, resolve_tf32

VOCAB = 50265
#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; matched
#: against the CUDA device name, first hit wins (so "H100 PCIe" is listed before "H100").
DENSE_BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


@dataclass
class Shapes:
    """Model and batch shapes of one benchmark."""

    hidden: int
    heads: int
    intermediate: int
    layers: int
    image: int
    patch: int
    length: int
    batch: int
    vocab: int = VOCAB

    @property
    def tokens_per_item(self) -> int:
        """Text tokens + image tokens (visual CLS + patches) LayoutLMv3 reads per window."""
        return self.length + 1 + (self.image // self.patch) ** 2


def dense_bf16_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak TFLOP/s or None when unknown / CPU)."""
    if device.type != "cuda":
        return f"CPU ({torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in DENSE_BF16_PEAK_TFLOPS if key in name), None)


def build(s: Shapes, queue: int) -> tuple[LayoutLMv3ForTokenClassification, AETNetModel]:
    common = dict(hidden_size=s.hidden, num_attention_heads=s.heads, intermediate_size=s.intermediate,
                  num_hidden_layers=s.layers)
    # LayoutLMv3's 2-D layout embedding concatenates 4 coordinate and 2 shape embeddings (128 each for base).
    coordinate = s.hidden // 6
    fusion = LayoutLMv3ForTokenClassification(
        LayoutLMv3Config(vocab_size=s.vocab, max_position_embeddings=514, input_size=s.image, patch_size=s.patch,
                         num_labels=7, coordinate_size=coordinate, shape_size=(s.hidden - 4 * coordinate) // 2,
                         **common)
    )
    vit = ViTModel(ViTConfig(image_size=s.image, patch_size=s.patch, layer_norm_eps=1e-6, **common),
                   add_pooling_layer=False)
    roberta = RobertaModel(RobertaConfig(vocab_size=s.vocab, max_position_embeddings=514, type_vocab_size=1,
                                         pad_token_id=1, **common), add_pooling_layer=False)
    aet = AETNetModel(copy.deepcopy(fusion), vit, roberta, AETConfig(queue_size=queue))
    freeze_gradless_tables(fusion)
    return fusion, aet


def make_batch(s: Shapes, device: torch.device) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    b, length = s.batch, s.length
    xy = torch.randint(0, 900, (b, length, 2), generator=g)
    wh = torch.randint(5, 60, (b, length, 2), generator=g)
    bbox = torch.cat([xy, (xy + wh).clamp(max=1000)], dim=-1)
    bbox[:, 0] = 0
    bbox[:, -1] = 0
    data = {
        "input_ids": torch.randint(3, s.vocab, (b, length), generator=g),
        "bbox": bbox,
        "attention_mask": torch.ones(b, length, dtype=torch.long),
        "pixel_values": torch.randn(b, 3, s.image, s.image, generator=g),
        "labels": torch.randint(0, 7, (b, length), generator=g),
    }
    data["input_ids"][:, 0], data["input_ids"][:, -1] = 0, 2
    extra = {"aug_pixel_values": torch.randn(b, 3, s.image, s.image, generator=g), "word_bbox": bbox.clone()}
    return ({k: v.to(device) for k, v in data.items()}, {k: v.to(device) for k, v in extra.items()})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_fn(model, data, optimizer, is_aet: bool, bf16: bool, device: torch.device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**data)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if is_aet:
            model.momentum_update()

    return step


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def phase_times(model, data, is_aet: bool, args, device: torch.device, bf16: bool) -> dict[str, float]:
    """Mean seconds of each phase of a training step (forward, backward, AdamW, EMA), timed separately.

    A fresh copy of ``model`` trains ``args.steps`` steps after ``args.warmup`` untimed ones, with a device
    synchronisation between phases (on CPU the phases are synchronous anyway).
    """
    model = copy.deepcopy(model).to(device).train()
    set_attention(model, args.attn)
    params = model.optimizer_param_groups(0.01) if is_aet else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    names = ("forward", "backward", "AdamW", "EMA") if is_aet else ("forward", "backward", "AdamW")
    totals = dict.fromkeys(names, 0.0)
    marks: list[float] = []

    def mark():
        sync(device)
        marks.append(time.perf_counter())

    for i in range(args.warmup + args.steps):
        marks.clear()
        mark()

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**data)
        mark()
        out["loss"].backward()
        mark()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mark()
        if is_aet:
            model.momentum_update()
            mark()
        if i >= args.warmup:
            for name, start, end in zip(names, marks, marks[1:]):
                totals[name] += end - start
    return {name: value / args.steps for name, value in totals.items()}


def update_times(model, is_aet: bool, steps: int, device: torch.device) -> dict[str, float]:
    """Mean seconds of the parameter updates alone (fused AdamW step, EMA) on random gradients.

    Their cost depends on the parameter count only (memory-bound passes over every trainable tensor),
    not on the batch, so they can be timed at 12 layers without a 12-layer forward pass.
    """
    model = model.to(device).train()  # updated in place: call last
    params = model.optimizer_param_groups(0.01) if is_aet else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p) * 1e-3
    totals = {"AdamW": 0.0, "EMA": 0.0} if is_aet else {"AdamW": 0.0}
    for i in range(steps + 1):
        start = time.perf_counter()
        optimizer.step()
        sync(device)
        middle = time.perf_counter()
        if is_aet:
            model.momentum_update()
            sync(device)
        if i:  # the first step allocates AdamW's moments
            totals["AdamW"] += middle - start
            if is_aet:
                totals["EMA"] += time.perf_counter() - middle
    return {name: value / steps for name, value in totals.items()}


def profile_step(model, data, is_aet: bool, args, device, bf16: bool, top: int = 12) -> None:
    """Print how many operators one training step launches and where its CPU time goes (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    model = copy.deepcopy(model).to(device).train()
    set_attention(model, args.attn)
    params = model.optimizer_param_groups(0.01) if is_aet else [p for p in model.parameters() if p.requires_grad]
    step = step_fn(model, data, torch.optim.AdamW(params, lr=1e-5, fused=True), is_aet, bf16, device)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"  {'AET' if is_aet else 'full'}: {calls} aten operator calls, {total / 1e3:.0f} ms self CPU time; "
          f"top {top} by self CPU time:")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"    {e.key[:48]:48s} {e.count:6d} calls {e.self_cpu_time_total / 1e3:9.1f} ms "
              f"{100 * e.self_cpu_time_total / total:5.1f} %")


def count_flops(model, data, bf16: bool, device: torch.device) -> int:
    """Forward + backward FLOPs of one step, with eager attention so every matmul is counted."""
    set_attention(model, "eager")
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**data)
        out["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_memory(step, device: torch.device) -> float | None:
    """Peak GPU memory of one step above what is resident before it (both models stay resident)."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated()
    step()
    sync(device)
    return (torch.cuda.max_memory_allocated() - resident) / 2**30


def prepare(model, data, is_aet, args, device, bf16, compiled: bool):
    """One configuration's training step (``model`` is trained in place; pass a fresh copy)."""
    model.to(device).train()
    set_attention(model, args.attn)
    if compiled:
        compile_encoders(model, args.compile_backend)
    params = model.optimizer_param_groups(0.01) if is_aet else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    return step_fn(model, data, optimizer, is_aet, bf16, device)


def measure_pair(steps: dict, args, device, compiled: bool) -> dict:
    """Time the full and the AET step alternately (full, AET, full, AET, ...).

    Alternating makes a change of load on a shared machine hit both alike: each pair gives one
    AET/full ratio, and the spread of those ratios is the noise of the measurement.

    Returns:
        ``{label: {"seconds": median step, "memory": peak GiB or None}, "ratios": [AET/full per pair]}``
    """
    warmup = args.warmup + (args.compile_warmup if compiled else 0)
    for step in steps.values():
        for _ in range(warmup):
            step()
    seconds: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.steps):
        for label, step in steps.items():
            seconds[label].append(time_steps(step, 1, 0, device))
    result = {label: {"seconds": statistics.median(values), "memory": peak_memory(steps[label], device)}
              for label, values in seconds.items()}
    result["ratios"] = [a / f for f, a in zip(seconds["full"], seconds["AET"])]
    return result


def term_times(aet: AETNetModel, data, extra, repeats: int, device) -> dict[str, float]:
    """Forward+backward time of each loss term on the features of one real AET forward (fp32)."""
    a = aet.alignment
    with torch.no_grad():
        vit_in = aet.vit_pixels(data["pixel_values"])
    image_hidden = aet.image_aligner(pixel_values=vit_in).last_hidden_state.detach().requires_grad_()
    text_hidden = aet.text_aligner(input_ids=data["input_ids"],
                                   attention_mask=data["attention_mask"]).last_hidden_state.detach().requires_grad_()
    # The model's own momentum passes (ViT over [I; I+], RoBERTa once over T without a text view).
    m = a.momentum_features(vit_in, data["input_ids"], data["attention_mask"], extra["aug_pixel_values"])
    feats = dict(v_m=m["image"], v_p=m["image_pos"], w_m=m["text"], w_p=m["text_pos"],
                 img_loc=m["image_locals"], txt_loc=m["text_locals"])
    iq, tq, temp = a.image_queue.queue, a.text_queue.queue, a.temp

    def momentum():
        a.momentum_features(vit_in, data["input_ids"], data["attention_mask"], extra["aug_pixel_values"])

    def run(fn):
        def go():
            v, w = a.vision_proj(image_hidden[:, 0]), a.text_proj(text_hidden[:, 0])
            fn(v, w).backward()

        return go

    fns = {
        "momentum encoders (no grad)": momentum,
        "ditc": run(lambda v, w: ditc_loss(v, w, feats["v_m"], feats["w_m"], iq, tq, temp, 0.4)),
        "imc": run(lambda v, w: imc_loss(v, w, feats["v_p"], feats["w_p"], iq, tq, temp)),
        "glitc": run(lambda v, w: 0.5 * (glitc_loss(v, feats["img_loc"], temp)
                                         + glitc_loss(w, feats["txt_loc"], temp, data["attention_mask"][:, 1:]))),
        "pita": run(lambda v, w: pita_loss(image_hidden[:, 1:], text_hidden, data["bbox"], data["attention_mask"],
                                           grid=aet.grid) + 0 * v.sum()),
    }
    return {name: time_steps(fn, repeats, 1, device) for name, fn in fns.items()}


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="small shapes (hidden 64, 1 layer, 64x64 images, 64 tokens, batch 2): a quick CPU check")
    parser.add_argument("--layers", type=int, help="layers per model (default 12; 1 with --tiny)")
    parser.add_argument("--batch", type=int, help="windows per step (default 16; 2 with --tiny)")
    parser.add_argument("--length", type=int, help="text tokens per window (default 512; 64 with --tiny)")
    parser.add_argument("--steps", type=int, help="timed steps per configuration (default 10; 3 with --tiny)")
    parser.add_argument("--warmup", type=int, help="untimed steps before timing (default 3; 1 with --tiny)")
    parser.add_argument("--compile-warmup", type=int,
                        help="extra untimed steps for compiled models (default 3; 1 with --tiny)")
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 on GPUs that support it, fp32 on CPU (as train.bf16 unset)")
    parser.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="attention kernel to time")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--terms", action="store_true", help="also time each loss term (fp32, eager)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one eager step of each (operator calls, top operators by CPU time)")
    parser.add_argument("--updates-only", action="store_true",
                        help="only time AdamW and the EMA on random gradients (no forward; any layer count)")
    parser.add_argument("--phases", action="store_true",
                        help="also time each phase of a step apart (forward, backward, AdamW, EMA), eager")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    tiny = args.tiny
    shapes = Shapes(hidden=64 if tiny else 768, heads=2 if tiny else 12, intermediate=128 if tiny else 3072,
                    layers=args.layers or (1 if tiny else 12), image=64 if tiny else 224, patch=16,
                    length=args.length or (64 if tiny else 512), batch=args.batch or (2 if tiny else 16),
                    vocab=1000 if tiny else VOCAB)
    args.steps = args.steps or (3 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    args.compile_warmup = args.compile_warmup if args.compile_warmup is not None else (1 if tiny else 3)
    bf16 = resolve_bf16(None) if args.precision == "auto" else args.precision == "bf16"
    tf32 = resolve_tf32(None) if device.type == "cuda" else False
    apply_tf32(tf32)
    name, peak = dense_bf16_peak(device)
    print(f"date {time.strftime('%Y-%m-%d')}; commit {_commit()}; device {name}; torch {torch.__version__}; "
          f"transformers {transformers.__version__}")
    print(f"shapes: {shapes.layers} layers x hidden {shapes.hidden} per model, batch {shapes.batch} x "
          f"({shapes.length} text + {shapes.tokens_per_item - shapes.length} image tokens); queue {args.queue}; "
          f"{'bf16 autocast' if bf16 else 'fp32'}; TF32 {'on' if tf32 else 'off'}; attention {args.attn}; "
          "fused AdamW")
    print("dense bf16 peaks (TFLOP/s): " + ", ".join(f"{k} {v:g}" for k, v in DENSE_BF16_PEAK_TFLOPS))
    print(f"peak used for MFU: {f'{peak:g} TFLOP/s' if peak else 'none (CPU or unknown device)'}")

    torch.manual_seed(0)
    full, aet = build(shapes, args.queue)
    if args.updates_only:
        updates = {"full": update_times(full, False, args.steps, device), "AET": update_times(aet, True, args.steps,
                                                                                            device)}
        for label, model in (("full", full), ("AET", aet)):
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"{label:5s} {trainable / 1e6:7.1f} M trainable: "
                  + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in updates[label].items()))
        return
    data, extra = make_batch(shapes, device)
    aet_data = {**data, **extra}
    flops = {"full": count_flops(full.to(device).train(), data, bf16, device),
             "AET": count_flops(aet.to(device).train(), aet_data, bf16, device)}
    tokens = shapes.batch * shapes.tokens_per_item
    rows, spreads = [], {}
    for compiled in (False, True) if not args.no_compile else (False,):
        steps = {label: prepare(copy.deepcopy(model), batch, is_aet, args, device, bf16, compiled)
                 for label, model, batch, is_aet in (("full", full, data, False), ("AET", aet, aet_data, True))}
        result = measure_pair(steps, args, device, compiled)
        del steps
        spreads[compiled] = result.pop("ratios")
        rows += [(label, compiled, r) for label, r in result.items()]
    print(f"{'':14s}{'compile':>9s}{'step (ms)':>11s}{'tokens/s':>11s}{'GFLOP/step':>12s}{'TFLOP/s':>10s}"
          f"{'MFU':>8s}{'peak mem':>10s}")
    times = {}
    for label, compiled, r in rows:
        seconds = r["seconds"]
        times[(label, compiled)] = seconds
        achieved = flops[label] / seconds / 1e12
        mfu = f"{100 * achieved / peak:6.1f}%" if peak else "   n/a"
        mem = f"{r['memory']:.2f} GiB" if r["memory"] is not None else "n/a"
        print(f"{label:14s}{'yes' if compiled else 'no':>9s}{seconds * 1e3:11.1f}{tokens / seconds:11.0f}"
              f"{flops[label] / 1e9:12.3f}{achieved:10.4f}{mfu:>8s}{mem:>10s}")
    flop_ratio = flops["AET"] / flops["full"]
    for compiled in sorted({c for _, c, _ in rows}):
        ratio = times[("AET", compiled)] / times[("full", compiled)]
        pairs = spreads[compiled]
        print(f"AET / full ({'compiled' if compiled else 'eager'}): time {ratio:.3f}x, FLOPs {flop_ratio:.3f}x "
              f"(target: time ratio <= FLOP ratio) -> {'met' if ratio <= flop_ratio else 'NOT met'}; "
              f"per alternated pair: median {statistics.median(pairs):.3f}x, min {min(pairs):.3f}x, "
              f"max {max(pairs):.3f}x over {len(pairs)} pairs; time/FLOP ratio {ratio / flop_ratio:.3f} "
              "(issue 24 target on CPU: <= 1.05)")
    if args.profile:
        print("profile of one step (eager):")
        for model, batch, is_aet in ((full, data, False), (aet, aet_data, True)):
            profile_step(model, batch, is_aet, args, device, bf16)
    if args.phases:
        phases = {label: phase_times(model, batch, is_aet, args, device, bf16)
                  for label, model, batch, is_aet in (("full", full, data, False), ("AET", aet, aet_data, True))}
        print("phases of one step (eager, ms; each timed apart, so they add up to about the step):")
        for label, times_ in phases.items():
            print(f"  {label:5s}" + "".join(f"{name:>10s} {value * 1e3:8.1f}" for name, value in times_.items()))
        fb = {label: t["forward"] + t["backward"] for label, t in phases.items()}
        rest = {label: sum(t.values()) - fb[label] for label, t in phases.items()}
        total = {label: sum(t.values()) for label, t in phases.items()}
        print(f"  forward+backward AET/full {fb['AET'] / fb['full']:.3f}x (FLOP ratio {flop_ratio:.3f}x); whole step "
              f"{total['AET'] / total['full']:.3f}x; AdamW+EMA share of the step: full "
              f"{100 * rest['full'] / total['full']:.1f} %, AET {100 * rest['AET'] / total['AET']:.1f} %")
        trainable = {label: sum(p.numel() for p in m.parameters() if p.requires_grad) for label, m in
                     (("full", full), ("AET", aet))}
        print(f"  trainable parameters: full {trainable['full'] / 1e6:.1f} M, AET {trainable['AET'] / 1e6:.1f} M "
              f"({trainable['AET'] / trainable['full']:.2f}x); EMA over "
              f"{sum(p.numel() for p in aet.alignment.momentum_pairs().tensors()[0]) / 1e6:.1f} M")
    if args.terms:
        aet_fp32 = copy.deepcopy(aet).to(device).train()
        set_attention(aet_fp32, args.attn)
        shares = term_times(aet_fp32, data, extra, args.steps, device)
        print("loss terms, forward+backward each (fp32):")
        for term, seconds in shares.items():
            print(f"  {term:28s}{seconds * 1e3:10.2f} ms")


if __name__ == "__main__":
    main()
