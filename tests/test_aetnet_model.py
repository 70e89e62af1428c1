"""AETNetModel: loss terms, gradient paths, eval purity, EMA, queues, saving, and an end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from aetnet.strategies.aet.model import AETNetModel

HIDDEN, IMAGE, PATCH, VOCAB, PAD = 32, 32, 8, 100, 1
B, L, K = 3, 8, 8
TERMS = ("task", "ditc", "imc", "glitc", "pita")
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture()
def make_model(tiny_aet_model):
    """``make_model(seed=0, **aet)``: the tiny AET model of these tests (AETConfig options override)."""
    return lambda seed=0, **aet: tiny_aet_model(IMAGE, PATCH, HIDDEN, VOCAB, PAD, seed=seed, **{"queue_size": K, **aet})


def make_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (B, L), generator=g)
    input_ids[:, 0] = 0
    input_ids[:, -1] = 2
    input_ids[2, 5:] = PAD
    input_ids[2, 4] = 2
    attention_mask = (input_ids != PAD).long()
    # Small boxes so most tokens fall inside one patch cell (PITA has non-empty patches).
    xy = torch.randint(0, 900, (B, L, 2), generator=g)
    bbox = torch.cat([xy, xy + torch.randint(1, 40, (B, L, 2), generator=g)], dim=-1)
    bbox[:, 0] = 0
    bbox[attention_mask == 0] = 0
    bbox[0, -1] = bbox[1, -1] = 0
    labels = torch.randint(0, 4, (B, L), generator=g)
    labels[attention_mask == 0] = -100
    return dict(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask,
                pixel_values=torch.rand(B, 3, IMAGE, IMAGE, generator=g) * 2 - 1, labels=labels,
                aug_pixel_values=torch.randn(B, 3, IMAGE, IMAGE, generator=g))


def test_train_forward_returns_every_term_and_weighted_total(make_model):
    weights = dict(task_weight=0.7, ditc_weight=1.3, imc_weight=0.5, glitc_weight=2.0, pita_weight=0.25)
    model = make_model(**weights).train()
    out = model(**make_batch())
    values = {name: float(out[f"{name}_loss"].detach()) for name in TERMS}
    assert all(math.isfinite(v) for v in values.values())
    assert out["logits"].shape == (B, L, 4)
    expected = sum(weights[f"{name}_weight"] * values[name] for name in TERMS)
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    # The contrastive terms are cross-entropies over at least B + K candidates: strictly positive.
    assert min(values["ditc"], values["imc"], values["glitc"]) > 0
    assert -1.0 <= values["pita"] <= 1.0  # minus a mean cosine


def _grad_norm(module) -> float:
    return sum(float(p.grad.norm()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("only", TERMS)
def test_gradients_reach_both_aligners_from_each_loss_alone(make_model, only):
    weights = {f"{name}_weight": float(name == only) for name in TERMS}
    model = make_model(**weights).train()
    model(**make_batch())["loss"].backward()
    assert _grad_norm(model.image_aligner) > 0
    assert _grad_norm(model.text_aligner) > 0
    # Projection heads are reached only through the document-level contrastive terms.
    uses_heads = only in ("ditc", "imc", "glitc")
    assert (_grad_norm(model.alignment.vision_proj) > 0) == uses_heads
    assert (_grad_norm(model.alignment.text_proj) > 0) == uses_heads
    assert all(p.grad is None for p in model.alignment.image_aligner_m.parameters())


def test_eval_forward_changes_nothing_and_has_no_alignment_terms(make_model):
    model = make_model().train()
    model(**make_batch(seed=5))  # fill part of the queue first
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(**make_batch())
    assert not model.momentum_update()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(model.alignment.image_queue.ptr) == B
    for name in ("ditc", "imc", "glitc", "pita"):
        assert getattr(out, f"{name}_loss") is None and f"{name}_loss" not in out
    assert float(out["loss"]) == float(out["task_loss"])


def _pairs_by_name(model):
    a = model.alignment
    for online, momentum in ((model.image_aligner, a.image_aligner_m), (model.text_aligner, a.text_aligner_m),
                             (a.vision_proj, a.vision_proj_m), (a.text_proj, a.text_proj_m)):
        twins = dict(momentum.named_parameters())
        for name, param in online.named_parameters():
            yield param, twins[name]


def test_momentum_update_copy_freeze_and_formula(make_model):
    model = make_model().train()
    with torch.no_grad():  # make online and momentum parameters differ everywhere
        for param, _ in _pairs_by_name(model):
            param.add_(torch.randn_like(param))
    pairs = list(_pairs_by_name(model))
    old = [twin.clone() for _, twin in pairs]

    assert model.momentum_update(1.0)
    assert all(torch.equal(twin, o) for (_, twin), o in zip(pairs, old))

    assert model.momentum_update(0.9)
    for (param, twin), o in zip(pairs, old):
        assert torch.allclose(twin, 0.9 * o + 0.1 * param, atol=1e-6)
    assert model.momentum_update(0.0)
    assert all(torch.equal(twin, param) for param, twin in pairs)
    # Default coefficient comes from the config.
    model.aet.momentum = 0.5
    with torch.no_grad():
        for param, _ in pairs:
            param.add_(1.0)
    model.momentum_update()
    assert all(torch.allclose(twin, param - 0.5) for param, twin in pairs)


def _independent_momentum_features(model, batch):
    a = model.alignment
    vit_in = ((batch["pixel_values"] * 0.5 + 0.5) - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        img = a.image_aligner_m(pixel_values=vit_in).last_hidden_state[:, 0]
        txt = a.text_aligner_m(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).last_hidden_state[:, 0]
        img = a.vision_proj_m.proj(img)
        txt = a.text_proj_m.proj(txt)
    return img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)


def test_enqueue_once_per_training_forward_with_momentum_cls_features(make_model):
    model = make_model().train()
    queue_img, queue_txt = model.alignment.image_queue, model.alignment.text_queue
    initial = queue_img.queue.clone()
    expected_cols = {}
    for step, seed in enumerate((11, 12, 13)):
        batch = make_batch(seed)
        img, txt = _independent_momentum_features(model, batch)
        model(**batch)
        assert int(queue_img.ptr) == int(queue_txt.ptr) == (step + 1) * B % K
        for row in range(B):
            expected_cols[(step * B + row) % K] = (img[row], txt[row])
    for col in range(K):
        if col in expected_cols:
            img, txt = expected_cols[col]
            assert torch.allclose(queue_img.queue[:, col], img, atol=1e-5)
            assert torch.allclose(queue_txt.queue[:, col], txt, atol=1e-5)
        else:
            assert torch.equal(queue_img.queue[:, col], initial[:, col])


def test_save_inference_roundtrip_and_no_training_parts(make_model, tmp_path):
    model = make_model(vit_norm="clip").train()
    model(**make_batch())["loss"].backward()
    model.eval()
    batch = {k: v for k, v in make_batch(seed=3).items() if k not in ("labels", "aug_pixel_values")}
    with torch.no_grad():
        expected = model(**batch)["logits"]
    model.save_inference(tmp_path)
    loaded = AETNetModel.load_inference(tmp_path, "token")
    assert loaded.alignment is None and not loaded.training and loaded.vit_norm == "clip"
    with torch.no_grad():
        got = loaded(**batch)["logits"]
    assert torch.equal(got, expected)

    files = sorted(tmp_path.rglob("*.safetensors"))
    assert {f.relative_to(tmp_path).as_posix() for f in files} == {
        "model.safetensors", "image_aligner/model.safetensors", "text_aligner/model.safetensors"}
    keys = {f.parent.name: set(safe_open(str(f), "pt").keys()) for f in files}
    # transformers may rename keys in the file (checkpoint format), so compare tensor counts.
    assert len(keys["image_aligner"]) == len(model.image_aligner.state_dict())
    assert len(keys["text_aligner"]) == len(model.text_aligner.state_dict())
    assert len(keys[tmp_path.name]) == len(model.fusion.state_dict())
    flat = set().union(*keys.values())
    assert not [k for k in flat if any(s in k for s in ("_m.", "queue", "vision_proj", "text_proj", "temp"))]


def test_optimizer_groups_exempt_bias_norm_and_temp(make_model):
    model = make_model()
    decay, no_decay = model.optimizer_param_groups(0.02)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.02 and no_decay["weight_decay"] == 0.0
    assert "alignment.temp" in no_decay_names
    assert "image_aligner.layernorm.weight" in no_decay_names
    assert "fusion.layoutlmv3.LayerNorm.weight" in no_decay_names
    assert all(n.endswith("bias") or "norm" in n.lower() or n == "alignment.temp" for n in no_decay_names)
    decayed = {names[id(p)] for p in decay["params"]}
    assert "text_aligner.encoder.layer.0.attention.self.query.weight" in decayed
    assert not [n for n in decayed | no_decay_names if "_m." in n]  # frozen momentum copies excluded
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed | no_decay_names == trainable


def test_finetune_demo_end_to_end_and_evaluate(tmp_path):
    from safetensors.torch import load_file

    from aetnet.inference.evaluation import evaluate_model
    from aetnet.train.runner import finetune

    run_dir = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "run", overrides=[
        "train.max_steps=4", "train.batch_size=2", "train.logging_steps=2", "train.save_steps=4",
        "aet.queue_size=16", "data.max_length=128", "data.stride=32"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "f1" in metrics and metrics["train_loss"] > 0
    state = json.loads((run_dir / "checkpoints/checkpoint-4/trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 2
    for entry in logged:
        for name in TERMS:
            assert math.isfinite(entry[f"{name}_loss"])
    # The trainer checkpoint (for --resume) holds the training-only state, the model folder does not.
    ckpt = load_file(str(run_dir / "checkpoints/checkpoint-4/model.safetensors"))
    assert int(ckpt["alignment.image_queue.ptr"]) == 8  # 4 steps x 2 documents
    assert "alignment.text_aligner_m.embeddings.word_embeddings.weight" in ckpt and "alignment.temp" in ckpt
    assert not (run_dir / "model/alignment").exists()
    again = evaluate_model(run_dir / "model", None, demo=True)
    for key in ("precision", "recall", "f1"):
        assert again[key] == metrics[key]


def test_same_document_masking_in_the_model(make_model):
    """Distinct document ids change nothing; a shared id removes negatives; the queue keeps the ids."""
    batch = make_batch()
    plain = make_model(mask_same_document=True).train()(**batch)
    distinct = make_model(mask_same_document=True).train()(**batch, doc_ids=torch.arange(B))
    for name in ("ditc", "imc", "glitc"):
        assert float(distinct[f"{name}_loss"]) == pytest.approx(float(plain[f"{name}_loss"]), rel=1e-6)
    model = make_model(mask_same_document=True).train()
    shared = model(**batch, doc_ids=torch.tensor([4, 4] + list(range(B - 2))))
    assert float(shared["glitc_loss"]) != pytest.approx(float(plain["glitc_loss"]), rel=1e-4)
    assert model.alignment.image_queue.ids[:B].tolist() == [4, 4] + list(range(B - 2))
    # The option off: ids are ignored entirely.
    off = make_model(mask_same_document=False).train()
    out = off(**batch, doc_ids=torch.tensor([4, 4] + list(range(B - 2))))
    assert float(out["ditc_loss"]) == pytest.approx(float(plain["ditc_loss"]), rel=1e-6)
    assert off.alignment.image_queue.ids.eq(-1).all()


def test_finetune_with_same_document_masking_on_windowed_pages(tmp_path):
    from aetnet.train.runner import finetune

    run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "run", overrides=[
        "train.max_steps=2", "train.batch_size=4", "data.max_length=64", "data.stride=16",
        "data.max_train_documents=2", "data.max_eval_documents=1", "aet.mask_same_document=true",
        "aet.queue_size=8"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_windows"] > metrics["train_documents"]  # pages really were split
    from safetensors.torch import load_file

    state = load_file(run / "checkpoints" / "checkpoint-2" / "model.safetensors")
    ids = state["alignment.image_queue.ids"].tolist()
    assert set(ids) <= {-1, 0, 1} and sum(i >= 0 for i in ids) == 8  # 2 steps x 4 windows of docs 0/1
