"""The released-code preset equals the released computation; momentum passes; PITA boxes and coverage.

The released forms are rebuilt here from the model's sub-modules with plain torch and explicit loops
(not through aetnet.strategies.aet.losses): ALBEF-style ITA with hard targets, IMC with v+ = v~ and w+ = w~ (one
momentum ViT pass on I+, one momentum RoBERTa pass on T), GLITC with the 196 momentum patches
projected and L2-normalised THEN avg-pooled (5, stride 4) to 9, and CE-form PITA with the released
``check_bbox`` (``floor(x0/72) == floor(x1/72)``) on the boxes LayoutLMv3 sees.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.aet.model import AETNetModel

HIDDEN, IMAGE, PATCH, VOCAB, PAD = 32, 56, 4, 100, 1  # a 14 x 14 patch grid, as in the base models
GRID = IMAGE // PATCH
B, L, K = 3, 10, 8

#: The options recipes/*/aet_official.yaml sets (checked against the recipe below).
RELEASED = dict(alpha=0.0, pita_form="ce", pita_cell=72.0, pita_skip_special=False, pita_mask_empty=False,
                pita_rule="inside", pita_boxes="model", momentum_image="augmented", glitc_image_locals=9,
                text_view="none", ditc_weight=1 / 3, imc_weight=1 / 3, glitc_weight=1 / 3, pita_weight=1.0)


@pytest.fixture()
def make_model(tiny_aet_model):
    """``make_model(**aet)``: the tiny AET model with momentum copies that differ from the online aligners."""

    def build(**aet) -> AETNetModel:
        model = tiny_aet_model(IMAGE, PATCH, HIDDEN, VOCAB, PAD, model_kwargs={"mask_token_id": 3,
                               "special_token_ids": (0, 1, 2)}, **{"queue_size": K, **aet})
        with torch.no_grad():  # momentum copies that differ from the online aligners, queues not random
            for p in model.alignment.parameters():
                p.add_(0.01 * torch.randn_like(p))
        return model.train()

    return build


def make_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, VOCAB, (B, L), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    input_ids[2, 7:] = PAD
    input_ids[2, 6] = 2
    attention_mask = (input_ids != PAD).long()
    xy = torch.randint(0, 950, (B, L, 2), generator=g)
    bbox = torch.cat([xy, (xy + torch.randint(1, 60, (B, L, 2), generator=g)).clamp(max=1000)], dim=-1)
    bbox[0, 3] = torch.tensor([72, 144, 144, 200])  # ends on a cell border: two cells, unused
    bbox[0, 4] = torch.tensor([72, 144, 143, 200])  # one unit less: patch 2 * 14 + 1
    bbox[:, 0] = 0
    bbox[attention_mask == 0] = 0
    bbox[:, -1] = 0
    bbox[2, 6] = 0
    labels = torch.randint(0, 4, (B, L), generator=g)
    labels[attention_mask == 0] = -100
    return dict(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, labels=labels,
                pixel_values=torch.rand(B, 3, IMAGE, IMAGE, generator=g) * 2 - 1,
                aug_pixel_values=torch.randn(B, 3, IMAGE, IMAGE, generator=g))


def _cl(query: torch.Tensor, keys: torch.Tensor, temp: float) -> torch.Tensor:
    """Hard-target InfoNCE, row b's positive is key column b: mean_b -log softmax(q_b . keys / t)[b]."""
    logits = query @ keys / temp
    return -torch.stack([F.log_softmax(logits[b], dim=0)[b] for b in range(query.shape[0])]).mean()


def _glitc_loop(glob: torch.Tensor, locs: torch.Tensor, valid: torch.Tensor, temp: float) -> float:
    per_doc = []
    for b in range(glob.shape[0]):
        negs = [float(glob[b] @ locs[c, j]) / temp for c in range(glob.shape[0]) if c != b
                for j in range(locs.shape[1]) if valid[c, j]]
        terms = [-(float(glob[b] @ locs[b, i]) / temp)
                 + math.log(math.exp(float(glob[b] @ locs[b, i]) / temp) + sum(math.exp(n) for n in negs))
                 for i in range(locs.shape[1]) if valid[b, i]]
        per_doc.append(sum(terms) / len(terms))
    return sum(per_doc) / len(per_doc)


def _released_pita(patches: torch.Tensor, tokens: torch.Tensor, bbox: torch.Tensor, attn: torch.Tensor) -> float:
    """CE form, cell 72, check_bbox floor(x0/72) == floor(x1/72); <s>, </s> (box 0) go to patch 0."""
    P = GRID * GRID
    docs = []
    for b in range(patches.shape[0]):
        sums, counts = torch.zeros(P, tokens.shape[2]), [0] * P
        for k in range(tokens.shape[1]):
            x0, y0, x1, y1 = (int(c) for c in bbox[b, k])
            if not attn[b, k] or x0 // 72 != x1 // 72 or y0 // 72 != y1 // 72:
                continue
            patch = (y0 // 72) * GRID + x0 // 72
            sums[patch] += tokens[b, k]
            counts[patch] += 1
        t = torch.stack([sums[p] / counts[p] if counts[p] else sums[p] for p in range(P)])
        v2t, t2v = patches[b] @ t.T, t @ patches[b].T
        rows = [0.5 * (-F.log_softmax(v2t[i], 0)[i] - F.log_softmax(t2v[i], 0)[i]) for i in range(P)]
        docs.append(float(sum(rows)) / P)
    return sum(docs) / len(docs)


def test_official_recipes_set_the_released_options():
    from aetnet.config.recipes import find_recipe
    from aetnet.config.settings import load_recipe_dict

    for name in ("funsd/aet_official", "cord/aet_official"):
        aet = load_recipe_dict(find_recipe(name, name.split("/")[0], "aet"))["aet"]
        for key, value in RELEASED.items():
            if not key.endswith("_weight"):
                assert aet[key] == pytest.approx(value) if isinstance(value, float) else aet[key] == value, key


def test_released_preset_equals_the_released_computation(make_model):
    model, batch = make_model(**RELEASED), make_batch()
    a = model.alignment
    image_queue, text_queue = a.image_queue.queue.clone(), a.text_queue.queue.clone()
    temp = float(a.temp.detach())
    out = model(**batch)
    with torch.no_grad():
        ids, attn = batch["input_ids"], batch["attention_mask"]
        image_hidden = model.image_aligner(pixel_values=model.vit_pixels(batch["pixel_values"])).last_hidden_state
        text_hidden = model.text_aligner(input_ids=ids, attention_mask=attn).last_hidden_state
        v = F.normalize(a.vision_proj.proj(image_hidden[:, 0]), dim=-1)
        w = F.normalize(a.text_proj.proj(text_hidden[:, 0]), dim=-1)
        image_m = a.image_aligner_m(pixel_values=batch["aug_pixel_values"]).last_hidden_state  # I+ only
        text_m = a.text_aligner_m(input_ids=ids, attention_mask=attn).last_hidden_state  # T only
        v_m = F.normalize(a.vision_proj_m.proj(image_m[:, 0]), dim=-1)
        w_m = F.normalize(a.text_proj_m.proj(text_m[:, 0]), dim=-1)
        ita = 0.5 * (_cl(v, torch.cat([w_m.T, text_queue], 1), temp) + _cl(w, torch.cat([v_m.T, image_queue], 1), temp))
        imc = 0.5 * (_cl(v, torch.cat([v_m.T, image_queue], 1), temp) + _cl(w, torch.cat([w_m.T, text_queue], 1), temp))
        patches = F.normalize(a.vision_proj_m.proj(image_m[:, 1:]), dim=-1)  # project + normalise 196 ...
        grid_maps = patches.transpose(1, 2).reshape(B, -1, GRID, GRID)
        image_locals = F.avg_pool2d(grid_maps, kernel_size=5, stride=4).flatten(2).transpose(1, 2)  # ... then pool
        text_locals = F.normalize(a.text_proj_m.proj(text_m[:, 1:]), dim=-1)
        glitc = 0.5 * (_glitc_loop(v, image_locals, torch.ones(B, 9, dtype=torch.bool), temp)
                       + _glitc_loop(w, text_locals, attn[:, 1:].bool(), temp))
        pita = _released_pita(image_hidden[:, 1:], text_hidden, batch["bbox"], attn)
    assert image_locals.shape == (B, 9, 16)
    assert float(out.ditc_loss) == pytest.approx(float(ita), rel=1e-5)
    assert float(out.imc_loss) == pytest.approx(float(imc), rel=1e-5)
    assert float(out.glitc_loss) == pytest.approx(glitc, rel=1e-5)
    assert float(out.pita_loss) == pytest.approx(pita, rel=1e-5)
    total = float(out.task_loss) + (float(ita) + float(imc) + glitc) / 3 + pita
    assert float(out.loss) == pytest.approx(total, rel=1e-5)


def _count_calls(module: torch.nn.Module) -> list[int]:
    sizes: list[int] = []
    module.register_forward_hook(lambda mod, args, kwargs, out: sizes.append(len(out.last_hidden_state)),
                                 with_kwargs=True)
    return sizes


@pytest.mark.parametrize("momentum_image,text_view,vit_rows,roberta_rows", [
    ("augmented", "none", [B], [B]),  # released: ViT once on I+, RoBERTa once on T
    ("both", "none", [2 * B], [B]),  # no text view: no second RoBERTa pass (w+ = w~)
    ("both", "mask", [2 * B], [2 * B]),  # a masked text view T+ is a real second view
])
def test_momentum_encoders_run_once_per_step_on_the_views_asked_for(make_model, momentum_image, text_view, vit_rows,
                                                                     roberta_rows):
    model = make_model(momentum_image=momentum_image, text_view=text_view)
    vit_calls = _count_calls(model.alignment.image_aligner_m)
    roberta_calls = _count_calls(model.alignment.text_aligner_m)
    model(**make_batch())
    assert vit_calls == vit_rows and roberta_calls == roberta_rows


def test_pita_maps_word_boxes_and_reports_coverage(make_model):
    batch = make_batch()
    attn = batch["attention_mask"]
    # Segment-like boxes LayoutLMv3 sees: wide, never inside one cell. Word boxes: small, inside one
    # cell except tokens 2 of every document (spans a border) -> 7+7+4 text tokens, 15 inside.
    seg = batch["bbox"].clone()
    seg[..., 0], seg[..., 2] = 10, 990
    word = torch.tensor([10, 10, 30, 30]).expand_as(seg).clone()  # all inside patch 0
    word[:, 2] = torch.tensor([140, 10, 150, 20])  # 140 // 71.43 = 1, 150 // 71.43 = 2
    text = (attn == 1) & (batch["bbox"] != 0).any(-1)
    seg[~text], word[~text] = 0, 0
    n_text = int(text.sum())
    batch["bbox"], batch["word_bbox"] = seg, word
    out = model_out = make_model(pita_boxes="word")(**batch)
    assert float(out.pita_coverage) == pytest.approx((n_text - B) / n_text)
    out_center = make_model(pita_boxes="word", pita_rule="center")(**batch)
    assert float(out_center.pita_coverage) == pytest.approx(1.0)
    out_model = make_model(pita_boxes="model")(**batch)
    assert float(out_model.pita_coverage) == 0.0
    assert float(out_model.pita_loss) == 0.0  # nothing mapped: masked cosine PITA is empty
    assert float(model_out.pita_loss) < 0.0
    with pytest.raises(Exception, match="word_bbox"):
        make_model(pita_boxes="word")(**dict(batch, word_bbox=word[:, :-1]))


@pytest.mark.parametrize("key,value,choices", [("pita_rule", "corner", "inside, center"),
                                               ("pita_boxes", "segment", "word, model"),
                                               ("momentum_image", "clean", "both, augmented")])
def test_new_options_reject_unknown_values_listing_the_choices(key, value, choices):
    from aetnet.errors import AetnetError

    with pytest.raises(AetnetError, match=f"aet.{key}='{value}' is not valid; choose one of: {choices}"):
        AETConfig(**{key: value})
