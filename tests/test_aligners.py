"""Aligner builders, tiny configs, projection head and the LayoutLMv3 compatibility check."""

from __future__ import annotations

import math
import time

import pytest
import torch
from transformers import (
    DeiTConfig,
    LayoutLMv3Config,
    LayoutLMv3Model,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaModel,
    ViTModel,
)

from aetnet.errors import AetnetError
from aetnet.strategies.aet.aligners import (
    ProjectionHead,
    build_image_aligner,
    build_text_aligner,
    check_compatible,
    tiny_image_aligner_config,
    tiny_text_aligner_config,
)

HIDDEN, IMAGE, PATCH, VOCAB, MAX_POS, PAD = 32, 32, 8, 100, 64, 1


def lm_config(**overrides) -> LayoutLMv3Config:
    kwargs = dict(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  input_size=IMAGE, patch_size=PATCH, vocab_size=VOCAB, max_position_embeddings=MAX_POS,
                  max_2d_position_embeddings=1001, coordinate_size=6, shape_size=4, pad_token_id=PAD)
    kwargs.update(overrides)
    return LayoutLMv3Config(**kwargs)


def vit_config(**overrides):
    cfg = tiny_image_aligner_config(HIDDEN, IMAGE, PATCH)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def roberta_config(**overrides):
    cfg = tiny_text_aligner_config(VOCAB, HIDDEN, MAX_POS, pad_token_id=PAD)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def test_tiny_vit_tokens_match_layoutlmv3_visual_tokens():
    torch.manual_seed(0)
    vit = build_image_aligner(config=vit_config()).eval()
    lm = LayoutLMv3Model(lm_config()).eval()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        out = vit(pixel_values=pixels).last_hidden_state
        visual = lm.forward_image(pixels)
    assert isinstance(vit, ViTModel) and vit.pooler is None
    assert out.shape == (2, 1 + (IMAGE // PATCH) ** 2, HIDDEN) == visual.shape
    assert vit.config.layer_norm_eps == 1e-6
    check_compatible(lm.config, vit, None)


def test_tiny_text_aligner_reads_layoutlmv3_input_ids():
    torch.manual_seed(0)
    roberta = build_text_aligner(config=roberta_config()).eval()
    assert isinstance(roberta, RobertaModel) and roberta.pooler is None
    # The longest text LayoutLMv3 accepts (positions run from pad+1) must fit RoBERTa's table too.
    length = MAX_POS - PAD - 1
    ids = torch.randint(3, VOCAB, (1, length))
    with torch.no_grad():
        out = roberta(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert out.shape == (1, length, HIDDEN)
    check_compatible(lm_config(), None, roberta)


def test_tiny_configs_are_deterministic():
    assert vit_config().to_dict() == vit_config().to_dict()
    assert roberta_config().to_dict() == roberta_config().to_dict()
    torch.manual_seed(5)
    a = build_image_aligner(config=vit_config())
    torch.manual_seed(5)
    b = build_image_aligner(config=vit_config())
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(AetnetError, match="multiple of patch_size"):
        tiny_image_aligner_config(HIDDEN, 30, PATCH)


def test_image_aligner_save_and_reload(tmp_path):
    torch.manual_seed(0)
    vit = build_image_aligner(config=vit_config()).eval()
    vit.save_pretrained(tmp_path / "vit")
    reloaded = build_image_aligner(str(tmp_path / "vit")).eval()
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        assert torch.equal(vit(pixel_values=pixels).last_hidden_state,
                           reloaded(pixel_values=pixels).last_hidden_state)
    assert reloaded.pooler is None


def test_checkpoint_layer_norm_eps_is_forced_to_deit_value(tmp_path):
    # DeiT checkpoints in ViT format ship layer_norm_eps=1e-12 although DeiT was trained with 1e-6.
    torch.manual_seed(0)
    vit = build_image_aligner(config=vit_config(layer_norm_eps=1e-12))
    vit.save_pretrained(tmp_path / "deit")
    assert build_image_aligner(tmp_path / "deit").config.layer_norm_eps == 1e-6
    assert build_image_aligner(tmp_path / "deit", layer_norm_eps=None).config.layer_norm_eps == 1e-12


def test_text_aligner_from_masked_lm_checkpoint_drops_lm_head(tmp_path):
    torch.manual_seed(0)
    mlm = RobertaForMaskedLM(roberta_config()).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    roberta = build_text_aligner(tmp_path / "mlm").eval()
    assert isinstance(roberta, RobertaModel)
    assert not any("lm_head" in name for name in roberta.state_dict())
    ids = torch.tensor([[0, 10, 11, 12, 2, PAD]])
    mask = (ids != PAD).long()
    with torch.no_grad():
        expected = mlm.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
        got = roberta(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(got, expected)


def test_offline_hub_id_fails_fast_with_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(AetnetError, match="facebook/deit-base-patch16-224.*offline.*local checkpoint folder"):
        build_image_aligner("facebook/deit-base-patch16-224")
    with pytest.raises(AetnetError, match="'roberta-base' could not be loaded"):
        build_text_aligner("roberta-base")
    assert time.monotonic() - start < 10


def test_bad_sources_raise(tmp_path):
    with pytest.raises(AetnetError, match="does not exist"):
        build_image_aligner(str(tmp_path / "missing" / "vit"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AetnetError, match="not a loadable RobertaModel checkpoint folder"):
        build_text_aligner(str(tmp_path / "empty"))
    with pytest.raises(AetnetError, match="exactly one"):
        build_image_aligner()
    with pytest.raises(AetnetError, match="exactly one"):
        build_text_aligner("roberta-base", config=roberta_config())


def test_projection_head_matches_hand_computation():
    torch.manual_seed(0)
    head = ProjectionHead(4, embed_dim=3)
    assert head(torch.randn(5, 7, 4)).shape == (5, 7, 3)
    assert ProjectionHead(HIDDEN)(torch.randn(2, HIDDEN)).shape == (2, 256)
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0]]))
        head.proj.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    x = torch.tensor([[3.0, 2.0, 9.0, 9.0]])
    # Linear gives (3, 4, 1); its length is sqrt(9 + 16 + 1).
    norm = math.sqrt(26.0)
    expected = torch.tensor([[3.0 / norm, 4.0 / norm, 1.0 / norm]])
    torch.testing.assert_close(head(x), expected)
    y = head(torch.randn(10, 4)).detach()
    for row in y:
        assert abs(sum(float(v) ** 2 for v in row) - 1.0) < 1e-5


def test_check_compatible_accepts_matching_and_reports_mismatches():
    cfg = lm_config()
    check_compatible(cfg, vit_config(), roberta_config())
    with pytest.raises(AetnetError, match="hidden_size is 32 but LayoutLMv3's is 64.*1024"):
        check_compatible(lm_config(hidden_size=64, coordinate_size=12, shape_size=8), vit_config(), None)
    with pytest.raises(AetnetError, match="text aligner: hidden_size is 48"):
        check_compatible(cfg, None, roberta_config(hidden_size=48))
    with pytest.raises(AetnetError, match="yields 65 tokens.*17 visual tokens"):
        check_compatible(cfg, vit_config(image_size=64), None)
    with pytest.raises(AetnetError, match="yields 5 tokens"):
        check_compatible(cfg, vit_config(patch_size=16), None)
    with pytest.raises(AetnetError, match="vocab_size is 50, smaller than LayoutLMv3's 100"):
        check_compatible(cfg, None, roberta_config(vocab_size=50))
    with pytest.raises(AetnetError, match="max_position_embeddings is 32"):
        check_compatible(cfg, None, roberta_config(max_position_embeddings=32))
    with pytest.raises(AetnetError, match="distillation token"):
        check_compatible(cfg, DeiTConfig(hidden_size=HIDDEN, image_size=IMAGE, patch_size=PATCH), None)
    with pytest.raises(AetnetError, match="visual_embed=false"):
        check_compatible(lm_config(visual_embed=False), vit_config(), None)
    # A larger RoBERTa vocabulary is fine (it is a superset of LayoutLMv3's ids).
    bigger_vocab = RobertaConfig(vocab_size=200, hidden_size=HIDDEN, max_position_embeddings=MAX_POS,
                                 num_attention_heads=2, pad_token_id=PAD)
    check_compatible(cfg, None, bigger_vocab)
