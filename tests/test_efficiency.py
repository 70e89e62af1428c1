"""GPU-efficiency settings, checked on CPU: SDPA equals eager, every strategy gives every trainable
parameter a gradient (so DDP runs without looking for unused ones), precision/TF32 defaults, compile."""

from __future__ import annotations

import json

import pytest
import torch

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.processor import load_processor
from aetnet.errors import AetnetError
from aetnet.inference.modelio import get_strategy, get_task
from aetnet.models.attention import attention_of, freeze_gradless_tables, set_attention
from aetnet.strategies.base import BasePaths
from aetnet.train.efficiency import compile_encoders, resolve_bf16, resolve_tf32

LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
STRATEGIES = ["full", "head", "lora", "prompt", "aet", "aet-lora"]


@pytest.fixture(scope="module")
def paths(tiny_base) -> BasePaths:
    from aetnet.models.tiny import resolve_base

    return BasePaths(*resolve_base("tiny"))


@pytest.fixture()
def make_batch(padded_windows):
    """Two windows, the second padded (so the attention masks matter), 64x64 pages like the tiny base."""
    return lambda seed=0: padded_windows(seed, (12, 7), 12, len(LABELS), augmented=True)


def build(strategy: str, paths: BasePaths, *overrides: str):
    torch.manual_seed(0)
    room = ["data.max_length=256", "data.stride=64"] if strategy == "prompt" else []
    cfg = resolve_config({}, {"strategy": strategy}, room + ["model.dropout=0", *overrides])
    return get_strategy(strategy).build(get_task("funsd"), cfg, paths, LABELS, load_processor(paths.layoutlmv3))


def test_sdpa_logits_equal_eager_and_sdpa_really_runs(make_batch, paths, monkeypatch):
    model = build("aet", paths).eval()
    batch = {k: v for k, v in make_batch().items() if k not in ("labels", "aug_pixel_values")}
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    layers = sum(m.config.num_hidden_layers for m in (model.fusion, model.image_aligner, model.text_aligner))
    logits = {}
    for impl in ("eager", "sdpa"):
        assert set_attention(model, impl) == 5  # fusion, ViT, RoBERTa and the two momentum aligners
        assert attention_of(model) == impl
        calls.clear()
        with torch.no_grad():
            logits[impl] = model(**batch).logits
        # In eval mode only fusion, ViT and RoBERTa run: SDPA once per layer, eager never.
        assert len(calls) == (layers if impl == "sdpa" else 0), impl
    torch.testing.assert_close(logits["sdpa"], logits["eager"], rtol=1e-5, atol=1e-5)
    # The padded row's real tokens must not see the padding under either kernel.
    assert torch.isfinite(logits["sdpa"]).all()


def test_attention_setting_is_validated():
    with pytest.raises(AetnetError, match="model.attn_implementation"):
        resolve_config({}, {}, ["model.attn_implementation=flash"])
    with pytest.raises(AetnetError, match="sdpa, eager"):
        set_attention(torch.nn.Linear(1, 1), "flash")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_trainable_parameter_gets_a_gradient(make_batch, strategy, paths):
    """What DDP with find_unused_parameters=False needs: after one backward, no trainable parameter
    is without a gradient (the relative-position tables, which never get one, are frozen)."""
    model = build(strategy, paths)
    frozen = freeze_gradless_tables(model)
    # The full model keeps LayoutLMv3's 3 tables trainable until frozen here; strategies that freeze
    # the backbone (head, lora, prompt, aet-lora) or the AET model (its own freeze) leave nothing to do.
    assert frozen == (3 if strategy == "full" else 0)
    model.train()
    batch = make_batch()
    if not strategy.startswith("aet"):
        del batch["aug_pixel_values"]
    model(**batch)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert any(p.requires_grad for p in model.parameters())


def test_trainer_runs_lean_ddp_fused_adamw_and_non_blocking(tmp_path, paths):
    from aetnet.train.trainer import build_trainer, training_arguments

    cfg = resolve_config({}, {"strategy": "aet"}, [])
    args = training_arguments(cfg, tmp_path)
    assert args.ddp_find_unused_parameters is False and args.ddp_broadcast_buffers is False
    assert args.logging_nan_inf_filter is False
    model = build("aet", paths)
    processor = type("P", (), {"tokenizer": type("T", (), {"pad_token_id": 1})()})()
    trainer = build_trainer(model, cfg, [], processor, [], tmp_path)
    assert trainer.optimizer.defaults["fused"] is True
    assert trainer.accelerator.dataloader_config.non_blocking is True
    assert trainer.efficiency == {"train_precision": "fp32", "tf32": False, "attn_implementation": "sdpa",
                                  "compile": "off", "gradient_checkpointing": False}


def test_precision_and_tf32_defaults_on_cpu():
    assert not torch.cuda.is_available(), "this test describes the CPU defaults"
    assert resolve_bf16(None) is False and resolve_bf16(True) is True
    assert resolve_tf32(None) is False and resolve_tf32(False) is False
    assert resolve_tf32(True) is False  # a GPU recipe asking for TF32 still runs on CPU, without it


def test_compile_backend_is_validated(paths):
    with pytest.raises(AetnetError, match="not a torch.compile backend"):
        compile_encoders(torch.nn.Linear(1, 1), "no-such-backend")


def test_compiled_run_matches_eager_run(tmp_path):
    """train.compile through the real runner: the encoders are compiled (traced by dynamo, AOT
    autograd) and two training steps give the losses of the uncompiled run."""
    from aetnet.train.runner import finetune

    common = ["train.max_steps=2", "train.batch_size=2", "train.logging_steps=1", "data.max_train_documents=2",
              "data.max_eval_documents=1", "model.dropout=0", "aet.queue_size=4"]
    from torch._dynamo.utils import counters

    runs, graphs = {}, {}
    for name, extra in (("eager", []), ("compiled", ["train.compile=true", "train.compile_backend=aot_eager"])):
        counters.clear()
        runs[name] = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / name,
                              overrides=common + extra)
        graphs[name] = counters["stats"]["unique_graphs"]
    assert graphs["eager"] == 0 and graphs["compiled"] >= 1, graphs
    metrics = {k: json.loads((v / "metrics.json").read_text()) for k, v in runs.items()}
    assert metrics["compiled"]["compile"] == "aot_eager" and metrics["eager"]["compile"] == "off"
    assert metrics["compiled"]["train_precision"] == "fp32" and metrics["compiled"]["attn_implementation"] == "sdpa"
    assert metrics["compiled"]["train_loss"] == pytest.approx(metrics["eager"]["train_loss"], rel=1e-4)


def test_sdpa_builds_the_position_bias_mask_once_per_forward(make_batch, paths, monkeypatch):
    """LayoutLMv3 hands the same bias to every layer: the merged mask is built once, not per layer,
    and the logits still equal eager's (padding included)."""
    from transformers.integrations import sdpa_attention

    model = build("full", paths).eval()
    batch = {k: v for k, v in make_batch().items() if k not in ("labels", "aug_pixel_values")}
    built = []
    original = sdpa_attention.create_position_bias_mask

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "create_position_bias_mask", counting)
    set_attention(model, "eager")
    with torch.no_grad():
        eager = model(**batch).logits
    set_attention(model, "sdpa")
    assert model.config.num_hidden_layers == 2
    with torch.no_grad():
        first = model(**batch).logits
        second = model(**batch).logits
    assert len(built) == 2  # once per forward, two forwards
    torch.testing.assert_close(first, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_gpu_options_are_accepted_and_recorded_on_cpu(paths):
    """A GPU recipe (bf16, TF32, compile) runs on CPU: bf16 is CPU autocast, TF32 is skipped, and
    metrics.json records what was used."""
    from aetnet.train.efficiency import prepare_model

    cfg = resolve_config({}, {"strategy": "full"}, ["train.bf16=true", "train.tf32=true", "train.compile=true",
                                                    "train.compile_backend=eager"])
    record = prepare_model(build("full", paths), cfg)
    assert record == {"train_precision": "bf16", "tf32": False, "attn_implementation": "sdpa", "compile": "eager",
                      "gradient_checkpointing": False}
