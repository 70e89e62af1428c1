"""model.train_relative_position_bias: LayoutLMv3's relative-position bias tables get gradients and train."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification

from aetnet.data.encoding.processor import load_processor
from aetnet.errors import AetnetError
from aetnet.models.relpos import TABLES, is_table, train_relative_position_biases
from aetnet.train.runner import finetune

BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2", "data.max_eval_documents=1",
          "data.max_length=128", "data.stride=32", "train.learning_rate=1e-2", "train.save_steps=100"]


def tiny_model() -> LayoutLMv3ForTokenClassification:
    torch.manual_seed(0)
    config = LayoutLMv3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              input_size=32, patch_size=8, vocab_size=100, max_position_embeddings=80,
                              max_2d_position_embeddings=1001, coordinate_size=6, shape_size=4, num_labels=3,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                              rel_pos_bins=32, max_rel_pos=16, rel_2d_pos_bins=64, max_rel_2d_pos=256)
    model = LayoutLMv3ForTokenClassification(config)
    with torch.no_grad():  # tables initialised to distinct values, so a wrong bucket shows
        for name in TABLES:
            getattr(model.layoutlmv3.encoder, name).weight.normal_()
    return model


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    xy = torch.randint(0, 900, (2, 40, 2), generator=g)  # spreads wider than max_rel_2d_pos: clamped buckets
    return dict(input_ids=torch.randint(3, 100, (2, 40), generator=g),
                bbox=torch.cat([xy, xy + torch.randint(0, 90, (2, 40, 2), generator=g)], -1),
                attention_mask=torch.ones(2, 40, dtype=torch.long),
                pixel_values=torch.randn(2, 3, 32, 32, generator=g), labels=torch.randint(0, 3, (2, 40), generator=g))


def test_same_outputs_as_the_stock_lookup_and_the_tables_get_gradients():
    stock = tiny_model()
    trained = copy.deepcopy(stock)
    assert train_relative_position_biases(trained) == list(TABLES)
    data = batch()
    out_stock, out_trained = stock(**data), trained(**data)
    assert torch.allclose(out_stock.logits, out_trained.logits, atol=1e-6)
    out_stock.loss.backward()
    out_trained.loss.backward()
    for name in TABLES:
        assert getattr(stock.layoutlmv3.encoder, name).weight.grad is None  # transformers: no_grad lookup
        grad = getattr(trained.layoutlmv3.encoder, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0
    # Every other gradient is unchanged.
    for (name, p), (_, q) in zip(stock.named_parameters(), trained.named_parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_table_names():
    assert is_table("fusion.layoutlmv3.encoder.rel_pos_x_bias.weight") and is_table("rel_pos_bias.weight")
    assert not is_table("layoutlmv3.encoder.rel_pos_bias_extra.weight") and not is_table("temp")


def test_lookup_by_hand():
    model = tiny_model()
    train_relative_position_biases(model)
    encoder = model.layoutlmv3.encoder
    positions = torch.tensor([[0, 1, 5, 40]])  # offsets beyond max_rel_pos=16 share the last bucket
    got = encoder._relative_position_lookup(positions, encoder.rel_pos_bias, 32, 16)
    weight = encoder.rel_pos_bias.weight  # (heads, bins)
    for i in range(4):
        for j in range(4):
            offset = int(positions[0, j] - positions[0, i])
            bucket = int(encoder.relative_position_bucket(torch.tensor(offset), num_buckets=32, max_distance=16))
            assert torch.equal(got[0, :, i, j], weight[:, bucket])


def _tables(run) -> dict[str, torch.Tensor]:
    weights = load_file(str(run / "model" / "model.safetensors"))
    return {k.split("encoder.", 1)[1]: v for k, v in weights.items() if is_table(k)}


def test_finetune_trains_the_tables_only_with_the_option(tmp_path, tiny_base):
    weights = load_file(str(tiny_base / "layoutlmv3" / "model.safetensors"))
    base = {k.split("encoder.", 1)[1]: v for k, v in weights.items() if is_table(k)}
    assert base
    plain = _tables(finetune("funsd", base="tiny", demo=True, output=tmp_path / "plain", overrides=BUDGET))
    tuned = _tables(finetune("funsd", base="tiny", demo=True, output=tmp_path / "tuned",
                             overrides=BUDGET + ["model.train_relative_position_bias=true"]))
    for key, value in base.items():
        assert torch.equal(plain[key], value), key
        assert not torch.equal(tuned[key], value), key
    with pytest.raises(AetnetError, match="does nothing with strategy head"):
        finetune("funsd", strategy="head", base="tiny", demo=True, output=tmp_path / "head",
                 overrides=BUDGET + ["model.train_relative_position_bias=true"])


def test_aet_keeps_the_tables_trainable_with_the_option(tmp_path):
    from aetnet.config.settings import resolve_config
    from aetnet.inference.modelio import get_strategy, get_task
    from aetnet.models.tiny import resolve_base
    from aetnet.strategies.base import BasePaths

    cfg = resolve_config({}, {"task": "funsd", "strategy": "aet", "model": {"base": "tiny"}},
                         ["model.train_relative_position_bias=true"])
    paths = BasePaths(*resolve_base("tiny", cfg.model.image_aligner, cfg.model.text_aligner))
    model = get_strategy("aet").build(get_task("funsd"), cfg, paths, ["O", "B-HEADER"],
                                      load_processor(paths.layoutlmv3))
    tables = [p for n, p in model.named_parameters() if is_table(n)]
    assert tables and all(p.requires_grad for p in tables)
