"""Tuning strategies lora, prompt and head on the tiny base: what trains, what the backbone sees,
and save -> load round trips through the runner's save_model/load_model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.processor import load_processor
from aetnet.errors import AetnetError
from aetnet.inference.modelio import get_strategy, get_task, load_model, save_model
from aetnet.strategies.base import BasePaths, load_task_model
from aetnet.strategies.lora.strategy import base_state_dict
from aetnet.strategies.prompt.strategy import PromptTuningModel
from tests.helpers import one_step, snapshot

LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
PAD = 1  # the tiny tokenizer's <pad> id (special tokens <s>, <pad>, </s>, ...)


@pytest.fixture(scope="module")
def paths(tiny_base) -> BasePaths:
    return BasePaths(str(tiny_base / "layoutlmv3"))


@pytest.fixture(scope="module")
def processor(paths):
    return load_processor(paths.layoutlmv3)


@pytest.fixture()
def make_batch(padded_windows):
    """Two windows of different lengths, padded like the Collator (pad id, zero boxes, -100)."""
    return lambda seed=0: padded_windows(seed, (9, 6), 9, len(LABELS), pad=PAD)


def build(strategy: str, paths: BasePaths, *overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    # Prompts take text positions: leave room for them (the recipe uses 492 for 20 prompts).
    room = ["data.max_length=256", "data.stride=64"] if strategy == "prompt" else []
    cfg = resolve_config({}, {"strategy": strategy}, room + list(overrides))
    return get_strategy(strategy).build(get_task("funsd"), cfg, paths, LABELS, load_processor(paths.layoutlmv3))


def eval_logits(model: nn.Module, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"})["logits"]


def meta_for(strategy: str) -> dict:
    return {"task": "funsd", "kind": "token", "strategy": strategy, "labels": LABELS, "box_level": "segment",
            "max_length": 512, "stride": 128, "base": "tiny"}


# ---------------------------------------------------------------------------------------- lora
@pytest.mark.parametrize("r,targets", [(4, ["query", "value"]), (2, ["query", "key", "value"])])
def test_lora_trains_only_adapters_and_head(paths, r, targets):
    model = build("lora", paths, f"lora.r={r}", f"lora.target_modules={','.join(targets)}")
    plain = load_task_model("token", paths.layoutlmv3, LABELS)
    expected = 0
    for name, module in plain.named_modules():
        if name.startswith("layoutlmv3.") and name.split(".")[-1] in targets:
            assert isinstance(module, nn.Linear)
            expected += r * (module.in_features + module.out_features)
    expected += sum(p.numel() for p in plain.classifier.parameters())
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == expected
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable), sorted(trainable)


def test_lora_step_leaves_base_weights_unchanged(make_batch, paths):
    model = build("lora", paths, "lora.r=4")
    before = snapshot(model)
    plain = load_task_model("token", paths.layoutlmv3, LABELS)
    one_step(model, make_batch())
    after = snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".lora_B." in n or ".modules_to_save." in n for n in changed), sorted(changed)
    assert any(".modules_to_save." in n for n in changed)
    # The unadapted weights equal the checkpoint's, key for key (the head aside: it is newly initialised).
    clean = base_state_dict(model.get_base_model())
    reference = plain.state_dict()
    assert set(clean) == set(reference)
    for key, value in reference.items():
        if not key.startswith("classifier."):
            assert torch.equal(clean[key], value), key


def test_lora_save_load_gives_identical_logits(make_batch, paths, processor, tmp_path):
    model = build("lora", paths, "lora.r=4")
    batch = make_batch(1)
    one_step(model, batch)
    logits = eval_logits(model, batch)
    save_model(model, processor, tmp_path / "model", meta_for("lora"))
    for rel in ("base/config.json", "base/model.safetensors", "adapter/adapter_config.json",
                "adapter/adapter_model.safetensors"):
        assert (tmp_path / "model" / rel).is_file(), rel
    loaded = load_model(tmp_path / "model").model
    torch.testing.assert_close(eval_logits(loaded, batch), logits, rtol=0, atol=1e-6)
    # The adapter folds into the base (what an export with merged LoRA relies on).
    merged = loaded.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(eval_logits(merged, batch), logits, rtol=1e-4, atol=1e-5)


def test_lora_unknown_target_fails_listing_choices(paths):
    with pytest.raises(AetnetError, match=r"lora.target_modules: qkv .*choose from:.*query"):
        build("lora", paths, "lora.target_modules=qkv")


# -------------------------------------------------------------------------------------- prompt
def test_prompt_backbone_sees_padded_inputs(make_batch, paths):
    n = 3
    model = build("prompt", paths, f"prompt.num_prompts={n}")
    batch = make_batch()
    seen: dict = {}
    backbone = model.model.layoutlmv3
    hooks = [
        backbone.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True),
        model.model.register_forward_pre_hook(lambda m, a, kw: seen.update(task_labels=kw["labels"]),
                                              with_kwargs=True),
    ]
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    for h in hooks:
        h.remove()
    words = backbone.embeddings.word_embeddings.weight
    for row in range(2):
        ids = batch["input_ids"][row].tolist()
        exp_ids = ids[:1] + [None] * n + ids[1:]
        exp_bbox = batch["bbox"][row].tolist()[:1] + [[0, 0, 0, 0]] * n + batch["bbox"][row].tolist()[1:]
        att = batch["attention_mask"][row].tolist()
        exp_att = att[:1] + [1] * n + att[1:]
        exp_lab = batch["labels"][row].tolist()[:1] + [-100] * n + batch["labels"][row].tolist()[1:]
        exp_pos, count = [], 0
        for tok in exp_ids:  # LayoutLMv3 numbers non-padding tokens from pad+1; padding gets pad
            if tok == PAD:
                exp_pos.append(PAD)
            else:
                count += 1
                exp_pos.append(PAD + count)
        assert seen["bbox"][row].tolist() == exp_bbox
        assert seen["attention_mask"][row].tolist() == exp_att
        assert seen["task_labels"][row].tolist() == exp_lab
        assert seen["position_ids"][row].tolist() == exp_pos
        for pos, tok in enumerate(exp_ids):
            want = model.prompt_embeddings[pos - 1] if tok is None else words[tok]
            assert torch.equal(seen["inputs_embeds"][row, pos], want), (row, pos)
    assert out["logits"].shape == (2, batch["input_ids"].shape[1], len(LABELS))


def test_prompt_equals_plain_model_when_prompts_are_placeholder_embeddings(make_batch, paths):
    """Splicing the prompts in as embeddings must equal LayoutLMv3 run on the extended ids."""
    n = 2
    model = build("prompt", paths, f"prompt.num_prompts={n}")
    inner = model.model
    with torch.no_grad():
        placeholder = inner.layoutlmv3.embeddings.word_embeddings.weight[model.placeholder_id]
        model.prompt_embeddings.copy_(placeholder)
    batch = make_batch(2)
    ids = batch["input_ids"]
    ext_ids = torch.cat([ids[:, :1], torch.full((2, n), model.placeholder_id), ids[:, 1:]], 1)
    zeros = torch.zeros(2, n, 4, dtype=torch.long)
    ext_bbox = torch.cat([batch["bbox"][:, :1], zeros, batch["bbox"][:, 1:]], 1)
    ext_att = torch.cat([batch["attention_mask"][:, :1], torch.ones(2, n, dtype=torch.long),
                         batch["attention_mask"][:, 1:]], 1)
    inner.eval()
    with torch.no_grad():
        ref = inner(input_ids=ext_ids, bbox=ext_bbox, attention_mask=ext_att,
                    pixel_values=batch["pixel_values"]).logits
    got = eval_logits(model, batch)
    torch.testing.assert_close(got, torch.cat([ref[:, :1], ref[:, 1 + n:]], 1), rtol=0, atol=1e-6)


def test_prompt_step_trains_only_prompts_and_head(make_batch, paths):
    n = 4
    model = build("prompt", paths, f"prompt.num_prompts={n}")
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    hidden = model.config.hidden_size
    assert set(trainable) == {"prompt_embeddings", "model.classifier.weight", "model.classifier.bias"}
    assert sum(trainable.values()) == n * hidden + hidden * len(LABELS) + len(LABELS)
    before = snapshot(model)
    one_step(model, make_batch())
    after = snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(trainable)


def test_prompt_save_load_gives_identical_logits(make_batch, paths, processor, tmp_path):
    model = build("prompt", paths, "prompt.num_prompts=3")
    batch = make_batch(3)
    one_step(model, batch)
    logits = eval_logits(model, batch)
    save_model(model, processor, tmp_path / "model", meta_for("prompt"))
    loaded = load_model(tmp_path / "model").model
    assert isinstance(loaded, PromptTuningModel) and loaded.num_prompts == 3
    torch.testing.assert_close(eval_logits(loaded, batch), logits, rtol=0, atol=1e-6)


def test_prompt_qa_positions_shift_and_logits_align(make_batch, paths):
    torch.manual_seed(0)
    qa = load_task_model("qa", paths.layoutlmv3, None)
    n = 2
    model = PromptTuningModel(qa, "qa", num_prompts=n).eval()
    with torch.no_grad():
        model.prompt_embeddings.copy_(qa.layoutlmv3.embeddings.word_embeddings.weight[model.placeholder_id])
    batch = {k: v for k, v in make_batch(4).items() if k != "labels"}
    starts, ends = torch.tensor([3, 0]), torch.tensor([5, 0])  # row 1: no answer in this window
    with torch.no_grad():
        out = model(**batch, start_positions=starts, end_positions=ends)
        ids = batch["input_ids"]
        ext = model.extend_inputs(ids, batch["bbox"], batch["attention_mask"])
        ref = qa(input_ids=ext["input_ids"], bbox=ext["bbox"], attention_mask=ext["attention_mask"],
                 pixel_values=batch["pixel_values"], start_positions=torch.tensor([3 + n, 0]),
                 end_positions=torch.tensor([5 + n, 0]))
    # LayoutLMv3's QA head scores text and visual tokens: only the N prompt positions go.
    assert out["start_logits"].shape == out["end_logits"].shape == (2, ref.start_logits.shape[1] - n)
    torch.testing.assert_close(out["loss"], ref.loss)
    torch.testing.assert_close(out["start_logits"], torch.cat([ref.start_logits[:, :1],
                                                               ref.start_logits[:, 1 + n:]], 1))


def test_prompt_too_long_for_positions_fails_early(paths):
    with pytest.raises(AetnetError, match=r"max_length=500 plus prompt.num_prompts=20.*data.max_length=492"):
        build("prompt", paths, "data.max_length=500", "prompt.num_prompts=20")


# ---------------------------------------------------------------------------------------- head
def test_head_trains_only_the_classifier(paths):
    model = build("head", paths)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    hidden = model.config.hidden_size
    assert set(trainable) == {"classifier.weight", "classifier.bias"}
    assert sum(trainable.values()) == hidden * len(LABELS) + len(LABELS)
