"""train.gradient_checkpointing: every strategy's step gives the same losses and gradients as without it
(dropout on, the same seed), while the layers that train keep fewer tensors for the backward pass; AET's
momentum copies are left alone; the runner records it, and it trains with torch.compile."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.processor import load_processor
from aetnet.errors import AetnetError
from aetnet.inference.modelio import get_strategy, get_task
from aetnet.models.checkpointing import checkpointed_layers, set_activation_checkpointing
from aetnet.strategies.base import BasePaths

LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
STRATEGIES = ["full", "head", "lora", "prompt", "aet", "aet-lora"]
TERMS = ("loss", "task_loss", "ditc_loss", "imc_loss", "glitc_loss", "pita_loss")


@pytest.fixture(scope="module")
def paths(tiny_base) -> BasePaths:
    from aetnet.models.tiny import resolve_base

    return BasePaths(*resolve_base("tiny"))


def build(strategy: str, paths: BasePaths):
    torch.manual_seed(0)
    room = ["data.max_length=256", "data.stride=64"] if strategy == "prompt" else []
    # Dropout stays on: the recomputation must draw the same masks as the first forward.
    # A short queue: the (256, 2 + 4096) queue copies DITC and IMC save would dwarf the tiny layers' activations.
    cfg = resolve_config({}, {"strategy": strategy}, [*room, "model.dropout=0.1", "aet.queue_size=8"])
    return get_strategy(strategy).build(get_task("funsd"), cfg, paths, LABELS, load_processor(paths.layoutlmv3))


def layer_count(model) -> int:
    """Transformer layers of LayoutLMv3 and, for AET, of both online aligners, read from their configs."""
    from aetnet.strategies.aet.model import AETNetModel

    aet = next((m for m in model.modules() if isinstance(m, AETNetModel)), None)
    if aet is not None:
        return sum(m.config.num_hidden_layers for m in (aet.fusion, aet.image_aligner, aet.text_aligner))
    return model.config.num_hidden_layers


def one_step(model, batch) -> tuple[dict, dict, int]:
    """Loss terms, gradients and the activation bytes autograd saved for backward outside checkpointed
    regions (weights and buffers such as AET's queues, which matmuls save too, are held anyway and are
    left out)."""
    weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            saved.append(t.numel() * t.element_size())
        return t

    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**batch)
    out["loss"].backward()
    terms = {k: out[k].detach().clone() for k in TERMS if out.get(k) is not None}
    grads = {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters() if p.requires_grad}
    return terms, grads, sum(saved)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_losses_and_gradients_equal_without_checkpointing(strategy, paths, padded_windows):
    plain = build(strategy, paths)
    checkpointed = copy.deepcopy(plain)
    assert set_activation_checkpointing(checkpointed) == layer_count(plain)
    batch = padded_windows(0, (12, 7), 12, len(LABELS), augmented=True)
    if not strategy.startswith("aet"):
        del batch["aug_pixel_values"]
    terms, grads, saved = one_step(plain, batch)
    c_terms, c_grads, c_saved = one_step(checkpointed, batch)
    assert terms.keys() == c_terms.keys() and len(terms) == (6 if strategy.startswith("aet") else 1)
    for name in terms:  # the same operations on the same numbers: bitwise equal
        assert torch.equal(terms[name], c_terms[name]), name
    assert grads.keys() == c_grads.keys()
    assert any(g is not None for g in grads.values())
    for name, grad in grads.items():
        assert (grad is None) == (c_grads[name] is None), name
        if grad is not None:
            assert torch.equal(grad, c_grads[name]), name
    # A frozen backbone fed no trainable input (head) keeps no activations in its layers: nothing to save.
    if strategy != "head":
        assert c_saved < 0.7 * saved, (c_saved, saved)


def test_momentum_copies_are_not_checkpointed_and_it_switches_off(paths):
    model = build("aet", paths)
    assert checkpointed_layers(model) == 0
    n = set_activation_checkpointing(model)
    assert n == layer_count(model) == checkpointed_layers(model)
    assert checkpointed_layers(model.alignment) == 0  # momentum ViT and RoBERTa run without gradients
    assert checkpointed_layers(model.fusion) == model.fusion.config.num_hidden_layers
    assert checkpointed_layers(model.image_aligner) == model.image_aligner.config.num_hidden_layers
    assert checkpointed_layers(model.text_aligner) == model.text_aligner.config.num_hidden_layers
    assert set_activation_checkpointing(model, enabled=False) == n and checkpointed_layers(model) == 0


def test_a_model_without_transformer_layers_is_refused():
    with pytest.raises(AetnetError, match="train.gradient_checkpointing"):
        set_activation_checkpointing(torch.nn.Linear(2, 2))


def test_runs_record_it_and_train_alike_eager_and_compiled(tmp_path):
    """Through the real runner (tiny AET, two steps): the same training loss and final weights with
    checkpointing as without, and with torch.compile of the checkpointed encoders as well."""
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    from aetnet.train.runner import finetune

    common = ["train.max_steps=2", "train.batch_size=2", "train.logging_steps=1", "data.max_train_documents=2",
              "data.max_eval_documents=1", "aet.queue_size=4",
              "data.max_length=128", "data.stride=32"]  # short windows: the compiled graphs are small
    variants = {"plain": [], "checkpointed": ["train.gradient_checkpointing=true"],
                "compiled": ["train.gradient_checkpointing=true", "train.compile=true",
                             "train.compile_backend=aot_eager"]}
    metrics, weights, graphs = {}, {}, {}
    for name, extra in variants.items():
        counters.clear()
        run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / name,
                       overrides=common + extra)
        graphs[name] = counters["stats"]["unique_graphs"]
        metrics[name] = json.loads((run / "metrics.json").read_text())
        weights[name] = load_file(str(run / "model" / "model.safetensors"))
    assert [metrics[n]["gradient_checkpointing"] for n in variants] == [False, True, True]
    assert graphs["plain"] == graphs["checkpointed"] == 0 and graphs["compiled"] >= 1
    assert metrics["checkpointed"]["train_loss"] == metrics["plain"]["train_loss"]
    assert weights["checkpointed"].keys() == weights["plain"].keys()
    for key, value in weights["plain"].items():
        assert torch.equal(value, weights["checkpointed"][key]), key
    assert metrics["compiled"]["train_loss"] == pytest.approx(metrics["plain"]["train_loss"], rel=1e-4)
