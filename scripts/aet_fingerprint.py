"""Fingerprint AET's losses, gradients and states, to check a refactor changes nothing (bitwise).

``dump OUT.pt`` records, for strategies ``aet`` and ``aet-lora`` on the tiny base and four option sets
(paper defaults, the released computation, text view + same-document masking, dropout), every loss
term and gradient of three optimizer steps (each followed by the EMA step) and the final state dict;
then the checkpoint of a real 2-step run with gradient accumulation 2. ``compare A.pt B.pt`` exits 1
unless every tensor is bitwise equal. Run ``dump`` before and after a change, then ``compare``::

    python scripts/aet_fingerprint.py dump before.pt   # on the old commit
    python scripts/aet_fingerprint.py dump after.pt    # on the new one
    python scripts/aet_fingerprint.py compare before.pt after.pt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
TERMS = ("loss", "task_loss", "ditc_loss", "imc_loss", "glitc_loss", "pita_loss", "pita_coverage")
OPTION_SETS = {
    "paper": [],
    "released": ["aet.pita_form=ce", "aet.pita_cell=72", "aet.pita_skip_special=false", "aet.pita_mask_empty=false",
                 "aet.glitc_image_locals=9", "aet.alpha=0", "aet.momentum_image=augmented", "aet.vit_norm=clip"],
    "mask-text-samedoc": ["aet.text_view=mask", "aet.mask_same_document=true", "aet.momentum=0.9"],
    "dropout": ["model.dropout=0.1", "aet.momentum=0.5"],
}


def batch(seed: int, doc_ids: bool) -> dict[str, torch.Tensor]:
    """Three windows of 12, 9 and 6 tokens (padded to 12), random boxes, labels and 64x64 images."""
    g = torch.Generator().manual_seed(seed)
    rows, width = 3, 12
    ids = torch.full((rows, width), 1)
    bbox = torch.zeros((rows, width, 4), dtype=torch.long)
    att = torch.zeros((rows, width), dtype=torch.long)
    labels = torch.full((rows, width), -100)
    for r, n in enumerate((12, 9, 6)):
        ids[r, 0], ids[r, n - 1] = 0, 2
        ids[r, 1:n - 1] = torch.randint(10, 1000, (n - 2,), generator=g)
        xy = torch.randint(0, 900, (n - 2, 2), generator=g)
        bbox[r, 1:n - 1] = torch.cat([xy, xy + torch.randint(1, 60, (n - 2, 2), generator=g)], 1)
        att[r, :n] = 1
        labels[r, 1:n - 1] = torch.randint(0, len(LABELS), (n - 2,), generator=g)
    out = dict(input_ids=ids, bbox=bbox, attention_mask=att, labels=labels, word_bbox=bbox.clone(),
               pixel_values=torch.rand((rows, 3, 64, 64), generator=g) * 2 - 1,
               aug_pixel_values=torch.randn((rows, 3, 64, 64), generator=g))
    if doc_ids:
        out["doc_ids"] = torch.tensor([5, 5, seed])
    return out


def dump(path: str) -> None:
    from safetensors.torch import load_file

    from aetnet.config.settings import resolve_config
    from aetnet.models.tiny import ensure_tiny_base
    from aetnet.strategies.base import BasePaths
    from aetnet.train.runner import finetune, get_strategy, get_task

    base = ensure_tiny_base()
    paths = BasePaths(str(base / "layoutlmv3"), str(base / "image_aligner"), str(base / "text_aligner"))
    out: dict[str, dict[str, torch.Tensor]] = {}
    for strategy in ("aet", "aet-lora"):
        for name, options in OPTION_SETS.items():
            torch.manual_seed(0)
            cfg = resolve_config({}, {"strategy": strategy},
                                 ["aet.queue_size=8", "aet.embed_dim=16", "lora.dropout=0.0", *options])
            model = get_strategy(strategy).build(get_task("funsd"), cfg, paths, LABELS).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
            record: dict[str, torch.Tensor] = {}
            torch.manual_seed(1)
            for step in range(3):
                output = model(**batch(step, doc_ids="samedoc" in name))
                record.update({f"{step}.{k}": output[k].detach().clone() for k in TERMS})
                output["loss"].backward()
                record.update({f"{step}.grad.{n}": p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None})
                optimizer.step()
                model.momentum_update()
                optimizer.zero_grad()
            record.update({f"state.{k}": v.clone() for k, v in model.state_dict().items()})
            out[f"{strategy}/{name}"] = record
            print(f"{strategy}/{name}: {len(record)} tensors", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=Path(tmp) / "run", overrides=[
            "train.max_steps=2", "train.batch_size=1", "train.gradient_accumulation_steps=2", "train.save_steps=2",
            "aet.queue_size=8", "aet.momentum=0.5", "data.max_length=64", "data.stride=16",
            "data.max_train_documents=2", "data.max_eval_documents=1", "train.learning_rate=0.01"])
        out["trainer"] = load_file(str(run / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    torch.save(out, path)
    print("saved", path)


def compare(first: str, second: str) -> int:
    a, b = torch.load(first), torch.load(second)
    bad = 0
    for group in sorted(set(a) | set(b)):
        ra, rb = a.get(group, {}), b.get(group, {})
        if set(ra) != set(rb):
            print(f"{group}: different tensors, e.g. {sorted(set(ra) ^ set(rb))[:3]}")
            bad += 1
            continue
        diff = [k for k in ra if not torch.equal(ra[k], rb[k])]
        verdict = "bitwise equal" if not diff else f"{len(diff)} differ, e.g. {diff[:3]}"
        print(f"{group}: {len(ra)} tensors, {verdict}")
        bad += bool(diff)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dump").add_argument("out")
    cmp = sub.add_parser("compare")
    cmp.add_argument("first")
    cmp.add_argument("second")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.out)
        return 0
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
