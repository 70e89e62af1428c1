"""Cost of an AET training step against full fine-tuning, measured in one run.

Builds base-shaped models (hidden 768, 12 heads, 224x224 images, 512 tokens; random weights, so
nothing is downloaded) with ``--layers`` layers in each of LayoutLMv3, the ViT and RoBERTa, and on
the same batch times training steps of

* full fine-tuning: ``LayoutLMv3ForTokenClassification`` forward + backward + AdamW step;
* AET: :class:`aetnet.models.aetnet.AETNetModel` forward (aligners, fused LayoutLMv3, momentum
  encoders, the four losses) + backward + AdamW step + the fused EMA update.

It prints the step times and their ratio next to the ratio of forward+backward FLOPs counted with
``torch.utils.flop_counter`` (the target: measured ratio within 1.10x of the FLOP ratio, i.e. no
wasted passes), each loss term's share of the AET step, and the peak memory of each (CUDA only).

    python benchmarks/aet_step_cost.py                 # CPU, 2 layers
    python benchmarks/aet_step_cost.py --layers 12     # GPU, real depth
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    LayoutLMv3Config,
    LayoutLMv3ForTokenClassification,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
)

from aetnet.config import AETConfig
from aetnet.losses import ditc_loss, glitc_loss, imc_loss, pita_loss
from aetnet.models.aetnet import AETNetModel

VOCAB = 50265


def build(layers: int, queue: int):
    common = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=layers)
    fusion = LayoutLMv3ForTokenClassification(
        LayoutLMv3Config(vocab_size=VOCAB, max_position_embeddings=514, input_size=224, patch_size=16,
                         num_labels=7, **common)
    )
    vit = ViTModel(ViTConfig(image_size=224, patch_size=16, layer_norm_eps=1e-6, **common), add_pooling_layer=False)
    roberta = RobertaModel(RobertaConfig(vocab_size=VOCAB, max_position_embeddings=514, type_vocab_size=1,
                                         pad_token_id=1, **common), add_pooling_layer=False)
    aet = AETNetModel(copy.deepcopy(fusion), vit, roberta, AETConfig(queue_size=queue))
    return fusion, aet


def batch(b: int, length: int, device):
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 900, (b, length, 2), generator=g)
    wh = torch.randint(5, 60, (b, length, 2), generator=g)
    bbox = torch.cat([xy, (xy + wh).clamp(max=1000)], dim=-1)
    bbox[:, 0] = 0
    bbox[:, -1] = 0
    data = {
        "input_ids": torch.randint(3, VOCAB, (b, length), generator=g),
        "bbox": bbox,
        "attention_mask": torch.ones(b, length, dtype=torch.long),
        "pixel_values": torch.randn(b, 3, 224, 224, generator=g),
        "labels": torch.randint(0, 7, (b, length), generator=g),
    }
    data["input_ids"][:, 0], data["input_ids"][:, -1] = 0, 2
    # AET-only inputs: the augmented view I+ and the word boxes PITA maps (here the same boxes).
    aug = {"aug_pixel_values": torch.randn(b, 3, 224, 224, generator=g), "word_bbox": bbox.clone()}
    return {k: v.to(device) for k, v in data.items()}, {k: v.to(device) for k, v in aug.items()}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_fn(model, data, optimizer, is_aet):
    def step():
        out = model(**data)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if is_aet:
            model.momentum_update()

    return step


def time_steps(step, steps: int, device) -> float:
    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def flops(model, data) -> int:
    with FlopCounterMode(display=False) as counter:
        model(**data)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def term_times(aet: AETNetModel, data, aug, repeats: int, device) -> dict[str, float]:
    """Forward+backward time of each loss term on the features of one real AET forward."""
    a = aet.alignment
    with torch.no_grad():
        vit_in = aet.vit_pixels(data["pixel_values"])
    image_hidden = aet.image_aligner(pixel_values=vit_in).last_hidden_state.detach().requires_grad_()
    text_hidden = aet.text_aligner(input_ids=data["input_ids"],
                                   attention_mask=data["attention_mask"]).last_hidden_state.detach().requires_grad_()
    # The model's own momentum passes (ViT over [I; I+], RoBERTa once over T without a text view).
    m = aet._momentum_features(vit_in, data["input_ids"], data["attention_mask"], aug["aug_pixel_values"])
    feats = dict(v_m=m["image"], v_p=m["image_pos"], w_m=m["text"], w_p=m["text_pos"],
                 img_loc=m["image_locals"], txt_loc=m["text_locals"])
    iq, tq, temp = a.image_queue.queue, a.text_queue.queue, a.temp

    def momentum():
        aet._momentum_features(vit_in, data["input_ids"], data["attention_mask"], aug["aug_pixel_values"])

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
        "pita": run(lambda v, w: pita_loss(image_hidden[:, 1:], text_hidden, data["bbox"], data["attention_mask"])
                    + 0 * v.sum()),
    }
    return {name: time_steps(fn, repeats, device) for name, fn in fns.items()}


def peak_memory(step, device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step()
    sync(device)
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=None, help="layers per model (default 12 on GPU, 2 on CPU)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    layers = args.layers or (12 if device.type == "cuda" else 2)
    torch.manual_seed(0)
    full, aet = build(layers, args.queue)
    full.to(device).train()
    aet.to(device).train()
    data, aug = batch(args.batch, args.length, device)
    aet_data = {**data, **aug}

    opt_full = torch.optim.AdamW([p for p in full.parameters() if p.requires_grad], lr=1e-5)
    opt_aet = torch.optim.AdamW(aet.optimizer_param_groups(0.01), lr=1e-5)
    full_step, aet_step = step_fn(full, data, opt_full, False), step_fn(aet, aet_data, opt_aet, True)

    f_full, f_aet = flops(full, data), flops(aet, aet_data)
    t_full = time_steps(full_step, args.steps, device)
    t_aet = time_steps(aet_step, args.steps, device)
    m_full, m_aet = peak_memory(full_step, device), peak_memory(aet_step, device)
    shares = term_times(aet, data, aug, args.steps, device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; layers per model: {layers}; batch {args.batch} x {args.length} tokens; "
          f"queue {args.queue}; torch {torch.__version__}")
    print(f"{'':28s}{'step (ms)':>12s}{'fwd+bwd GFLOP':>16s}{'peak memory':>16s}")
    print(f"{'full fine-tuning':28s}{t_full * 1e3:12.1f}{f_full / 1e9:16.1f}{m_full:>16s}")
    print(f"{'AET':28s}{t_aet * 1e3:12.1f}{f_aet / 1e9:16.1f}{m_aet:>16s}")
    time_ratio, flop_ratio = t_aet / t_full, f_aet / f_full
    print(f"AET / full: time {time_ratio:.3f}x, FLOPs {flop_ratio:.3f}x, "
          f"time ratio / FLOP ratio = {time_ratio / flop_ratio:.3f} (target <= 1.10)")
    print("share of the AET step:")
    for term, seconds in shares.items():
        print(f"  {term:28s}{seconds * 1e3:10.2f} ms  {100 * seconds / t_aet:6.2f} %")


if __name__ == "__main__":
    main()
