"""Fusion hooks: aligned features enter LayoutLMv3 after its text embeddings and after its visual norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification, LayoutLMv3Model

from aetnet.errors import AetnetError
from aetnet.strategies.aet.aligners import (
    build_image_aligner,
    build_text_aligner,
    tiny_image_aligner_config,
    tiny_text_aligner_config,
)
from aetnet.strategies.aet.fusion import find_layoutlmv3, fused_features

HIDDEN, IMAGE, PATCH, VOCAB = 32, 32, 8, 100
GRID = IMAGE // PATCH
VISUAL_TOKENS = 1 + GRID * GRID  # 17
BATCH, LENGTH, PAD = 2, 7, 1


def tiny_config(**overrides) -> LayoutLMv3Config:
    kwargs = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        input_size=IMAGE,
        patch_size=PATCH,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        max_2d_position_embeddings=1001,
        coordinate_size=6,  # 4 * 6 + 2 * 4 = 32: the six 2-D embeddings are concatenated to hidden_size
        shape_size=4,
        num_labels=5,
        pad_token_id=PAD,
    )
    kwargs.update(overrides)
    return LayoutLMv3Config(**kwargs)


@pytest.fixture
def task_model() -> LayoutLMv3ForTokenClassification:
    torch.manual_seed(0)
    model = LayoutLMv3ForTokenClassification(tiny_config()).eval()
    # cls_token and pos_embed are zero-initialised; make them non-trivial so the visual path is exercised.
    with torch.no_grad():
        model.layoutlmv3.cls_token.normal_()
        model.layoutlmv3.pos_embed.normal_()
    return model


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (BATCH, LENGTH), generator=g)
    input_ids[:, 0] = 0
    input_ids[0, -1] = 2
    input_ids[1, 4] = 2
    input_ids[1, 5:] = PAD  # second document is padded
    attention_mask = (input_ids != PAD).long()
    x0 = torch.randint(0, 500, (BATCH, LENGTH), generator=g)
    y0 = torch.randint(0, 500, (BATCH, LENGTH), generator=g)
    w = torch.randint(1, 400, (BATCH, LENGTH), generator=g)
    h = torch.randint(1, 400, (BATCH, LENGTH), generator=g)
    bbox = torch.stack([x0, y0, x0 + w, y0 + h], dim=-1)
    pixel_values = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=g)
    labels = torch.randint(0, 5, (BATCH, LENGTH), generator=g)
    labels[attention_mask == 0] = -100
    return dict(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values,
                labels=labels)


def random_features(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(BATCH, LENGTH, HIDDEN, generator=g)
    return text, torch.randn(BATCH, VISUAL_TOKENS, HIDDEN, generator=g)


def no_hooks(lm: LayoutLMv3Model) -> bool:
    return len(lm.embeddings._forward_hooks) == 0 and len(lm.norm._forward_hooks) == 0


def by_hand_forward(lm: LayoutLMv3Model, batch: dict, text_feats: torch.Tensor, image_feats: torch.Tensor):
    """Re-run LayoutLMv3Model.forward from its submodules, adding the features where the spec says."""
    input_ids, bbox, mask = batch["input_ids"], batch["bbox"], batch["attention_mask"]
    pixels = batch["pixel_values"]
    b, length = input_ids.shape
    text = lm.embeddings(input_ids=input_ids, bbox=bbox, token_type_ids=torch.zeros_like(input_ids))
    text = text + text_feats
    # Visual stream step by step: conv patches (row-major), CLS first, learned positions, LayerNorm.
    patches = lm.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
    visual = torch.cat([lm.cls_token.expand(b, 1, HIDDEN), patches], dim=1) + lm.pos_embed
    visual = lm.norm(visual) + image_feats
    hidden = lm.dropout(lm.LayerNorm(torch.cat([text, visual], dim=1)))
    # Visual boxes written out cell by cell on the 0-1000 scale; the visual CLS covers the page.
    boxes = [[1, 1, 999, 999]]
    for row in range(GRID):
        for col in range(GRID):
            x0, y0 = col * 1000 // GRID, row * 1000 // GRID
            boxes.append([x0, y0, (col + 1) * 1000 // GRID, (row + 1) * 1000 // GRID])
    visual_bbox = torch.tensor(boxes).expand(b, -1, -1)
    final_bbox = torch.cat([bbox, visual_bbox], dim=1)
    # With an image, the relative-position bias uses 0..L-1 for text and 0..V-1 for patches.
    positions = torch.cat([torch.arange(length), torch.arange(VISUAL_TOKENS)]).expand(b, -1)
    keep = torch.cat([mask, torch.ones(b, VISUAL_TOKENS, dtype=mask.dtype)], dim=1).float()
    additive = (1.0 - keep)[:, None, None, :] * torch.finfo(torch.float32).min
    out = lm.encoder(hidden, bbox=final_bbox, attention_mask=additive, position_ids=positions)
    return out.last_hidden_state


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def test_zero_features_equal_plain_outputs_and_gradients(task_model, batch):
    task_model.zero_grad()
    plain = task_model(**batch)
    plain.loss.backward()
    plain_grads = {n: None if p.grad is None else p.grad.clone() for n, p in task_model.named_parameters()}
    assert sum(g is not None for g in plain_grads.values()) > 10

    task_model.zero_grad()
    zeros_text = torch.zeros(BATCH, LENGTH, HIDDEN)
    zeros_image = torch.zeros(BATCH, VISUAL_TOKENS, HIDDEN)
    with fused_features(task_model, text_features=zeros_text, image_features=zeros_image) as state:
        fused = task_model(**batch)
    assert state.calls == {"embeddings": 1, "norm": 1}
    fused.loss.backward()

    assert torch.equal(fused.logits, plain.logits)
    assert torch.equal(fused.loss, plain.loss)
    for name, param in task_model.named_parameters():
        if plain_grads[name] is None:
            assert param.grad is None, name
        else:
            assert torch.equal(param.grad, plain_grads[name]), name


def test_random_features_match_by_hand_forward(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    with torch.no_grad():
        with fused_features(task_model, text_features=text_feats, image_features=image_feats):
            fused = task_model(**model_inputs(batch))
        expected_hidden = by_hand_forward(lm, batch, text_feats, image_feats)
        expected_logits = task_model.classifier(expected_hidden[:, :LENGTH])
        with fused_features(lm, text_features=text_feats, image_features=image_feats):
            fused_hidden = lm(**model_inputs(batch)).last_hidden_state
        plain = task_model(**model_inputs(batch))
        # The by-hand route with zero features must reproduce the plain model too (checks the route).
        zeros = (torch.zeros_like(text_feats), torch.zeros_like(image_feats))
        plain_by_hand = by_hand_forward(lm, batch, *zeros)

    assert fused_hidden.shape == (BATCH, LENGTH + VISUAL_TOKENS, HIDDEN)
    torch.testing.assert_close(fused_hidden, expected_hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused.logits, expected_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(lm(**model_inputs(batch)).last_hidden_state, plain_by_hand, rtol=0, atol=1e-6)
    # The features matter.
    assert (fused.logits - plain.logits).abs().max() > 1e-2


def test_fusion_is_not_an_inputs_embeds_addition(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    inputs = model_inputs(batch)
    with torch.no_grad():
        with fused_features(lm, text_features=text_feats, image_features=image_feats):
            fused = lm(**inputs).last_hidden_state
        # The tempting alternative: add text features to the word embeddings and pass inputs_embeds.
        embeds = lm.embeddings.word_embeddings(inputs["input_ids"]) + text_feats
        with fused_features(lm, image_features=image_feats):
            via_embeds = lm(
                inputs_embeds=embeds, bbox=inputs["bbox"], attention_mask=inputs["attention_mask"],
                pixel_values=inputs["pixel_values"],
            ).last_hidden_state
    assert (fused - via_embeds).abs().max() > 1e-2


def test_only_image_or_only_text_features(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    with torch.no_grad():
        with fused_features(lm, image_features=image_feats) as state:
            image_only = lm(**model_inputs(batch)).last_hidden_state
        assert state.calls == {"norm": 1}
        with fused_features(lm, text_features=text_feats) as state:
            text_only = lm(**model_inputs(batch)).last_hidden_state
        assert state.calls == {"embeddings": 1}
        expected_image_only = by_hand_forward(lm, batch, torch.zeros_like(text_feats), image_feats)
        expected_text_only = by_hand_forward(lm, batch, text_feats, torch.zeros_like(image_feats))
    torch.testing.assert_close(image_only, expected_image_only, rtol=0, atol=1e-6)
    torch.testing.assert_close(text_only, expected_text_only, rtol=0, atol=1e-6)


def test_gradients_reach_features_and_aligners(task_model, batch):
    torch.manual_seed(3)
    vit = build_image_aligner(config=tiny_image_aligner_config(HIDDEN, IMAGE, PATCH))
    roberta = build_text_aligner(config=tiny_text_aligner_config(VOCAB, HIDDEN, 64, pad_token_id=PAD))
    image_feats = vit(pixel_values=batch["pixel_values"]).last_hidden_state
    text_out = roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    text_feats = text_out.last_hidden_state
    image_feats.retain_grad()
    text_feats.retain_grad()
    with fused_features(task_model, text_features=text_feats, image_features=image_feats):
        loss = task_model(**batch).loss
    loss.backward()
    assert text_feats.grad is not None and text_feats.grad.abs().sum() > 0
    assert image_feats.grad is not None and image_feats.grad.abs().sum() > 0
    assert vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    assert roberta.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_hook_that_does_not_fire_raises(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    with pytest.raises(RuntimeError, match="embeddings fired 0 times"):
        with fused_features(lm, text_features=text_feats, image_features=image_feats), torch.no_grad():
            lm(pixel_values=batch["pixel_values"])  # image only: the text hook cannot fire
    assert no_hooks(lm)
    with pytest.raises(RuntimeError, match="norm fired 0 times"):
        with fused_features(lm, image_features=image_feats):
            pass  # no forward at all
    assert no_hooks(lm)


def test_second_forward_in_one_block_raises(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    with pytest.raises(RuntimeError, match="fired twice"):
        with fused_features(task_model, text_features=text_feats, image_features=image_feats), \
                torch.no_grad():
            task_model(**model_inputs(batch))
            task_model(**model_inputs(batch))
    assert no_hooks(lm)
    # Even when the caller swallows the error inside the block, the exit check still reports it.
    with pytest.raises(RuntimeError, match="exactly once"):
        with fused_features(lm, image_features=image_feats), torch.no_grad():
            lm(pixel_values=batch["pixel_values"])
            try:
                lm(pixel_values=batch["pixel_values"])
            except RuntimeError:
                pass
    assert no_hooks(lm)


def test_hooks_removed_after_exit_and_after_body_error(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    with torch.no_grad():
        before = task_model(**model_inputs(batch)).logits
        with fused_features(task_model, text_features=text_feats, image_features=image_feats):
            assert len(lm.embeddings._forward_hooks) == 1 and len(lm.norm._forward_hooks) == 1
            task_model(**model_inputs(batch))
        assert no_hooks(lm)
        assert torch.equal(task_model(**model_inputs(batch)).logits, before)

        class BodyError(Exception):
            pass

        # The body's own exception comes out unchanged, not replaced by the "did not fire" error.
        with pytest.raises(BodyError):
            with fused_features(task_model, text_features=text_feats, image_features=image_feats):
                raise BodyError("boom")
        assert no_hooks(lm)
        assert torch.equal(task_model(**model_inputs(batch)).logits, before)


def test_shape_errors(task_model, batch):
    lm = task_model.layoutlmv3
    text_feats, image_feats = random_features()
    with pytest.raises(ValueError, match="hidden size 16"):
        with fused_features(lm, text_features=torch.zeros(BATCH, LENGTH, 16)):
            pass
    with pytest.raises(ValueError, match="10 tokens but LayoutLMv3 has 17 visual tokens"):
        with fused_features(lm, image_features=torch.zeros(BATCH, 10, HIDDEN)):
            pass
    with pytest.raises(ValueError, match="shape"):
        with fused_features(lm, text_features=torch.zeros(LENGTH, HIDDEN)):
            pass
    assert no_hooks(lm)
    # Text length and batch size are only known at forward time.
    with pytest.raises(ValueError, match="token count must match"):
        with fused_features(lm, text_features=text_feats[:, :-1]), torch.no_grad():
            lm(**model_inputs(batch))
    with pytest.raises(ValueError, match="batch size"):
        with fused_features(lm, image_features=image_feats[:1]), torch.no_grad():
            lm(**model_inputs(batch))
    assert no_hooks(lm)


def test_model_without_visual_embeddings_rejects_image_features():
    torch.manual_seed(0)
    lm = LayoutLMv3Model(tiny_config(visual_embed=False)).eval()
    with pytest.raises(AetnetError, match="visual_embed"):
        with fused_features(lm, image_features=torch.zeros(1, VISUAL_TOKENS, HIDDEN)):
            pass
    # Text fusion still works on a text-only model.
    ids = torch.tensor([[0, 5, 6, 2]])
    feats = torch.randn(1, 4, HIDDEN)
    with torch.no_grad(), fused_features(lm, text_features=feats) as state:
        lm(input_ids=ids)
    assert state.calls == {"embeddings": 1}


def test_find_layoutlmv3_through_wrappers(task_model):
    lm = task_model.layoutlmv3
    assert find_layoutlmv3(lm) is lm
    assert find_layoutlmv3(task_model) is lm
    wrapper = nn.ModuleDict({"inner": nn.ModuleList([task_model])})
    assert find_layoutlmv3(wrapper) is lm
    with pytest.raises(TypeError, match="exactly one"):
        find_layoutlmv3(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="holding 2"):
        find_layoutlmv3(nn.ModuleList([task_model, LayoutLMv3Model(tiny_config())]))
