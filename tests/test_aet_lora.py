"""Strategy aet-lora on the tiny base: what trains, what the EMA touches, the loss terms, saving,
merging, and an end-to-end run with an export whose LoRA is merged."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import aetnet
from aetnet.cli.main import main
from aetnet.config.settings import resolve_config
from aetnet.data.encoding.processor import load_processor
from aetnet.export.folder import sample_inputs, training_only_tensors
from aetnet.inference.evaluation import evaluate_model
from aetnet.inference.modelio import get_strategy, get_task, load_model, save_model
from aetnet.strategies.aet.aligners import build_image_aligner, build_text_aligner
from aetnet.strategies.aet.model import AETNetModel
from aetnet.strategies.aet_lora import ADAPTER_FILE, LORA_FILE, AETLoraModel
from aetnet.strategies.base import BasePaths, count_parameters, load_task_model
from aetnet.train.runner import finetune
from tests.helpers import one_step, snapshot

LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
PAD = 1  # the tiny tokenizer's <pad> id
EMBED = 16
TERMS = ("task", "ditc", "imc", "glitc", "pita")
#: LayoutLMv3/RoBERTa names and the transformers 5.x ViT names of the same projections.
NAMES = {"query": {"query", "q_proj"}, "key": {"key", "k_proj"}, "value": {"value", "v_proj"}}


@pytest.fixture(scope="module")
def paths(tiny_base) -> BasePaths:
    return BasePaths(str(tiny_base / "layoutlmv3"), str(tiny_base / "image_aligner"),
                     str(tiny_base / "text_aligner"))


def build(strategy: str, paths: BasePaths, *overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = resolve_config({}, {"strategy": strategy},
                         ["aet.queue_size=8", f"aet.embed_dim={EMBED}", "lora.dropout=0.0", *overrides])
    return get_strategy(strategy).build(get_task("funsd"), cfg, paths, LABELS, load_processor(paths.layoutlmv3))


@pytest.fixture()
def make_batch(padded_windows):
    """Two windows of different lengths (padded like the Collator), clean and augmented images."""
    return lambda seed=0: padded_windows(seed, (9, 6), 9, len(LABELS), pad=PAD, box_span=60, pixels="uniform",
                                         augmented=True)


def independent_trainable_count(paths: BasePaths, r: int, targets: list[str]) -> int:
    """r * (in + out) for every targeted Linear of the three plain models, plus the task head, the two
    projection heads (hidden x embed + embed each) and the temperature."""
    fusion = load_task_model("token", paths.layoutlmv3, LABELS)
    image = build_image_aligner(paths.image_aligner, layer_norm_eps=None)
    text = build_text_aligner(paths.text_aligner)
    wanted = set().union(*(NAMES[t] for t in targets))
    total = 0
    for prefix, model in (("layoutlmv3.", fusion), ("", image), ("", text)):
        for name, module in model.named_modules():
            if name.startswith(prefix) and name.split(".")[-1] in wanted:
                assert isinstance(module, nn.Linear), name
                total += r * (module.in_features + module.out_features)
    total += sum(p.numel() for p in fusion.classifier.parameters())
    for hidden in (image.config.hidden_size, text.config.hidden_size):
        total += hidden * EMBED + EMBED
    return total + 1


def lora_names(model: nn.Module, part: str, kind: str = "lora_B") -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(part + ".") and f".{kind}." in n]


# ------------------------------------------------------------------------------ what trains
@pytest.mark.parametrize("r,targets", [(4, ["query", "value"]), (2, ["query", "key", "value"])])
def test_trainable_parameters_are_adapters_heads_and_temperature(paths, r, targets):
    model = build("aet-lora", paths, f"lora.r={r}", f"lora.target_modules={','.join(targets)}")
    assert isinstance(model, AETLoraModel)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == independent_trainable_count(paths, r, targets)
    assert count_parameters(model)[0] == sum(trainable.values())
    allowed = ("fusion.classifier.", "alignment.vision_proj.", "alignment.text_proj.")
    assert all(".lora_" in n and not n.startswith("alignment.") or n.startswith(allowed) or n == "alignment.temp"
               for n in trainable), sorted(trainable)
    # Adapters in all three models, and momentum copies of the ADAPTED aligners (frozen).
    for part in ("fusion", "image_aligner", "text_aligner", "alignment.image_aligner_m",
                 "alignment.text_aligner_m"):
        assert lora_names(model, part), part
    assert not any(p.requires_grad for n, p in model.named_parameters() if "_m." in n)
    full_aet = count_parameters(build("aet", paths))[0]
    assert sum(trainable.values()) < full_aet / 10


def test_training_step_changes_adapters_and_heads_only(make_batch, paths):
    model = build("aet-lora", paths, "lora.r=4")
    before = snapshot(model)
    one_step(model, make_batch())
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable
    frozen = set(before) - trainable
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    for part in ("fusion", "image_aligner", "text_aligner"):
        assert lora_names(model, part)
    # B starts at zero, so A gets no gradient in the first step (Adam then leaves it as it is); every
    # other trainable tensor (B, heads, projections, temperature) moves.
    unmoved = {n for n in trainable if ".lora_A." in n}
    assert changed == trainable - unmoved, sorted(trainable - unmoved - changed)


# ------------------------------------------------------------------------------------- EMA
def test_momentum_update_touches_only_trainable_parameters(make_batch, paths):
    model = build("aet-lora", paths, "lora.r=4")
    one_step(model, make_batch())  # online adapters now differ from the momentum copies
    a = model.alignment
    pairs = [(model.image_aligner, a.image_aligner_m), (model.text_aligner, a.text_aligner_m),
             (a.vision_proj, a.vision_proj_m), (a.text_proj, a.text_proj_m)]
    # Make one frozen online weight differ: an EMA over all parameters would drag the copy along.
    frozen_online = model.image_aligner.get_parameter("layers.0.attention.q_proj.base_layer.weight")
    frozen_momentum = a.image_aligner_m.get_parameter("layers.0.attention.q_proj.base_layer.weight")
    original = frozen_online.detach().clone()
    with torch.no_grad():
        frozen_online.add_(1.0)
    online_before = [{n: p.detach().clone() for n, p in on.named_parameters()} for on, _ in pairs]
    momentum_before = [{n: p.detach().clone() for n, p in mo.named_parameters()} for _, mo in pairs]
    m = 0.25
    assert model.momentum_update(m)
    for (online, momentum), on_old, mo_old in zip(pairs, online_before, momentum_before):
        for name, twin in momentum.named_parameters():
            src = online.get_parameter(name)
            if src.requires_grad:  # LoRA matrices and projection heads: one EMA step
                want = m * mo_old[name] + (1 - m) * on_old[name]
                torch.testing.assert_close(twin, want, rtol=0, atol=1e-7)
            else:  # frozen: never written
                assert torch.equal(twin, mo_old[name]), name
    assert torch.equal(frozen_momentum, original)  # untouched although the online weight moved
    tracked = sum(len(lora_names(model, p, "lora_A")) + len(lora_names(model, p)) for p in
                  ("image_aligner", "text_aligner")) + 4  # + weight and bias of the two projections
    assert model.alignment.momentum_pairs().num_tensors() == tracked
    with torch.no_grad():
        frozen_online.copy_(original)
    model.momentum_update(0.0)  # m = 0 copies every trainable parameter exactly
    for online, momentum in pairs:
        for name, twin in momentum.named_parameters():
            assert torch.equal(twin, online.get_parameter(name)), name  # frozen ones: equal all along
    model.eval()
    assert not model.momentum_update(0.0)  # never during evaluation


# ------------------------------------------------------------------------------ loss terms
def test_every_loss_term_is_finite_and_alignment_reaches_aligner_adapters(make_batch, paths):
    model = build("aet-lora", paths, "lora.r=4").train()
    out = model(**make_batch(1))
    for name in TERMS:
        assert out[f"{name}_loss"] is not None and math.isfinite(float(out[f"{name}_loss"].detach())), name
    expected = sum(float(out[f"{name}_loss"].detach()) for name in TERMS)  # unit weights by default
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    out["ditc_loss"].backward()  # an alignment loss alone: no path through LayoutLMv3
    for part in ("image_aligner", "text_aligner"):
        grads = [model.get_parameter(n).grad for n in lora_names(model, part)]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), part
    assert all(model.get_parameter(n).grad is None for n in lora_names(model, "fusion"))
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


# --------------------------------------------------------------------------- save and merge
def _logits(model: nn.Module, inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs)["logits"]


def _check_merged_weight(merged: nn.Module, adapters: dict, part: str, module: str, base: torch.Tensor,
                         scale: float) -> None:
    """W_merged = W_base + scale * B @ A, computed here with an explicit loop over the rank."""
    a = adapters[f"{part}.{module}.lora_A.default.weight"]
    b = adapters[f"{part}.{module}.lora_B.default.weight"]
    delta = torch.zeros_like(base)
    for k in range(a.shape[0]):
        delta += torch.outer(b[:, k], a[k])
    assert delta.abs().max() > 0
    got = getattr(merged, part).get_parameter(f"{module}.weight")
    torch.testing.assert_close(got, base + scale * delta, rtol=0, atol=1e-6)


def test_save_load_and_merge_keep_logits(make_batch, paths, tmp_path):
    model = build("aet-lora", paths, "lora.r=4", "lora.alpha=12")
    one_step(model, make_batch(2))
    processor = load_processor(paths.layoutlmv3)
    inputs = sample_inputs(processor, 2, 12)
    want = _logits(model, inputs)
    meta = {"task": "funsd", "kind": "token", "strategy": "aet-lora", "labels": LABELS, "box_level": "segment",
            "max_length": 512, "stride": 128, "base": "tiny"}
    folder = tmp_path / "model"
    save_model(model, processor, folder, meta)
    for rel in ("config.json", "model.safetensors", "image_aligner/model.safetensors",
                "text_aligner/model.safetensors", ADAPTER_FILE, LORA_FILE, "aet_fusion.json"):
        assert (folder / rel).is_file(), rel
    assert training_only_tensors(folder) == []
    base_keys = set(load_file(str(folder / "model.safetensors")))
    assert not any("lora_" in k or "base_layer" in k for k in base_keys)
    assert "layoutlmv3.encoder.layer.0.attention.self.query.weight" in base_keys
    loaded = load_model(folder).model
    assert isinstance(loaded, AETLoraModel) and loaded.alignment is None
    torch.testing.assert_close(_logits(loaded, inputs), want, rtol=0, atol=1e-6)

    adapters = load_file(str(folder / ADAPTER_FILE))
    bases = {"fusion": "layoutlmv3.encoder.layer.1.attention.self.value",
             "image_aligner": "layers.0.attention.q_proj", "text_aligner": "encoder.layer.0.attention.self.value"}
    before = {part: loaded.get_parameter(f"{part}.{m}.base_layer.weight").detach().clone()
              for part, m in bases.items()}
    merged = loaded.merge_and_unload()
    assert type(merged) is AETNetModel
    assert not any("lora_" in n or "base_layer" in n for n, _ in merged.named_parameters())
    for part, module in bases.items():
        _check_merged_weight(merged, adapters, part, module, before[part], 12 / 4)
    torch.testing.assert_close(_logits(merged, inputs), want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ end to end
def test_finetune_evaluate_and_export_with_merged_lora(paths, tmp_path):
    run = finetune("funsd", recipe="funsd/aet_lora", strategy="aet-lora", base="tiny", demo=True,
                   output=tmp_path / "run", overrides=[
                       "train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
                       "data.max_eval_documents=1", "data.max_length=128", "data.stride=32",
                       "aet.queue_size=4", f"aet.embed_dim={EMBED}", "lora.r=4"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == independent_trainable_count(paths, 4, ["query", "value"])
    assert metrics["trainable_parameters"] < count_parameters(build("aet", paths))[0] / 10
    again = evaluate_model(run / "model", None, demo=True, overrides=["data.max_eval_documents=1"])
    for key in ("precision", "recall", "f1"):
        assert again[key] == metrics[key]
    adapters = load_file(str(run / "model" / ADAPTER_FILE))
    assert max(t.abs().max() for k, t in adapters.items() if ".lora_B." in k) > 0  # trained

    out = tmp_path / "export"
    assert main(["export", str(run), "--output", str(out), "--merge-lora"]) == 0
    meta = json.loads((out / "aetnet.json").read_text())
    assert (meta["strategy"], meta["merged_from"], meta["lora_merged"]) == ("aet", "aet-lora", True)
    assert not (out / ADAPTER_FILE).exists() and training_only_tensors(out) == []
    exported_keys = [k for f in out.rglob("*.safetensors") for k in load_file(str(f))]
    assert exported_keys and not any("lora_" in k or "base_layer" in k for k in exported_keys)
    reference = load_model(run)
    inputs = sample_inputs(reference.processor, 3, 20, seed=3)
    want = _logits(reference.model, inputs)
    got = _logits(aetnet.load(out).model, inputs)
    assert (got - want).abs().max().item() <= 1e-4
    # The adapters matter: without them (the frozen base weights alone) the logits differ.
    with torch.no_grad():
        for name, param in reference.model.named_parameters():
            if ".lora_B." in name:
                param.zero_()
    assert (_logits(reference.model, inputs) - want).abs().max().item() > 1e-6
