"""Views for the alignment losses: image augmentation, normalisation, token masking."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from aetnet.data.encoding.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAYOUTLMV3_MEAN,
    LAYOUTLMV3_STD,
    _shift_hue,
    mask_tokens,
    momentum_view,
    random_resized_crop_box,
    renormalize,
    to_tensor_normalized,
)

OFF = dict(p_jitter=0.0, p_grayscale=0.0, p_blur=0.0, num_ops=(0, 0))


def _page(width: int = 60, height: int = 48, seed: int = 0) -> Image.Image:
    """A colourful, textured test image (random blocks and noise)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(height // 4, width // 4, 3), dtype=np.uint8)
    big = np.kron(blocks, np.ones((4, 4, 1), dtype=np.uint8))
    return Image.fromarray(big, "RGB")


def _arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_output_size_and_mode(mode):
    image = _page(70, 40).convert(mode)
    for seed in range(5):
        out = momentum_view(image, 32, np.random.default_rng(seed))
        assert out.size == (32, 32) and out.mode == "RGB"


def test_same_seed_same_view_different_seed_different_view():
    image = _page()
    a = momentum_view(image, 32, np.random.default_rng(7))
    b = momentum_view(image, 32, np.random.default_rng(7))
    c = momentum_view(image, 32, np.random.default_rng(8))
    assert np.array_equal(_arr(a), _arr(b))
    assert not np.array_equal(_arr(a), _arr(c))


def test_full_crop_with_everything_off_is_a_plain_resize():
    image = _page(60, 48)  # aspect 1.25
    out = momentum_view(
        image, 32, np.random.default_rng(0), crop_scale=(1.0, 1.0), crop_ratio=(1.25, 1.25), **OFF
    )
    assert np.array_equal(_arr(out), _arr(image.resize((32, 32), Image.BILINEAR)))


def test_crop_boxes_respect_scale_ratio_and_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(100, 80, rng)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 80
        assert 0.2 * 8000 * 0.9 <= w * h <= 8000
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # a strip where no crop with ratio in [3/4, 4/3] can cover 20% of the area: centred fallback
    assert random_resized_crop_box(300, 10, np.random.default_rng(0)) == (143, 0, 156, 10)


def test_grayscale_branch_gives_equal_channels():
    image = _page()
    for seed in range(6):
        out = _arr(momentum_view(image, 32, np.random.default_rng(seed), p_grayscale=1.0, p_jitter=1.0))
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    colour = _arr(momentum_view(image, 32, np.random.default_rng(0), **OFF))
    assert not np.array_equal(colour[..., 0], colour[..., 1])


def test_jitter_and_blur_branches_change_the_image():
    image = _page()
    base = _arr(momentum_view(image, 32, np.random.default_rng(3), **OFF))
    jittered = _arr(momentum_view(image, 32, np.random.default_rng(3), **{**OFF, "p_jitter": 1.0}))
    blurred = _arr(momentum_view(image, 32, np.random.default_rng(3), **{**OFF, "p_blur": 1.0}))
    assert not np.array_equal(base, jittered)

    def total_variation(a: np.ndarray) -> int:
        return int(np.abs(np.diff(a, axis=0)).sum() + np.abs(np.diff(a, axis=1)).sum())

    assert total_variation(blurred) < total_variation(base)


def test_hue_shift_matches_colorsys():
    red = Image.new("RGB", (2, 2), (255, 0, 0))
    out = _arr(_shift_hue(red, 1 / 3))[0, 0] / 255.0
    expected = colorsys.hsv_to_rgb((0.0 + 1 / 3) % 1.0, 1.0, 1.0)  # pure green
    assert out.tolist() == pytest.approx(list(expected), abs=0.02)


def test_to_tensor_normalized_by_hand():
    image = Image.fromarray(np.array([[[255, 0, 128], [0, 0, 0]], [[10, 20, 30], [255, 255, 255]]], np.uint8))
    t = to_tensor_normalized(image, 2, IMAGENET_MEAN, IMAGENET_STD)
    assert t.shape == (3, 2, 2) and t.dtype == torch.float32
    assert t[0, 0, 0].item() == pytest.approx((1.0 - 0.485) / 0.229, rel=1e-6)
    assert t[1, 0, 0].item() == pytest.approx((0.0 - 0.456) / 0.224, rel=1e-6)
    assert t[2, 1, 0].item() == pytest.approx((30 / 255 - 0.406) / 0.225, rel=1e-6)
    assert to_tensor_normalized(_page(50, 30), 16, LAYOUTLMV3_MEAN, LAYOUTLMV3_STD).shape == (3, 16, 16)


def test_renormalize_matches_direct_formula_and_round_trips():
    pv = torch.randn(2, 3, 4, 5)
    out = renormalize(pv, LAYOUTLMV3_MEAN, LAYOUTLMV3_STD, IMAGENET_MEAN, IMAGENET_STD)
    for b in range(2):
        for c in range(3):
            for y in range(4):
                for x in range(5):
                    pixel = pv[b, c, y, x].item() * 0.5 + 0.5
                    want = (pixel - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
                    assert out[b, c, y, x].item() == pytest.approx(want, rel=1e-5, abs=1e-5)
    back = renormalize(out, IMAGENET_MEAN, IMAGENET_STD, LAYOUTLMV3_MEAN, LAYOUTLMV3_STD)
    assert torch.allclose(back, pv, atol=1e-5)
    # same geometry: LayoutLMv3's pixel_values become exactly the online ViT's input
    image = _page(50, 30)
    lv3 = to_tensor_normalized(image, 16, LAYOUTLMV3_MEAN, LAYOUTLMV3_STD).unsqueeze(0)
    vit = to_tensor_normalized(image, 16, IMAGENET_MEAN, IMAGENET_STD).unsqueeze(0)
    converted = renormalize(lv3, LAYOUTLMV3_MEAN, LAYOUTLMV3_STD, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(converted, vit, atol=1e-5)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        renormalize(torch.zeros(2, 1, 4, 4), IMAGENET_MEAN, IMAGENET_STD, IMAGENET_MEAN, IMAGENET_STD)


def _token_batch(b: int = 64, length: int = 512):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (b, length), generator=gen)
    lengths = torch.randint(length // 4, length + 1, (b,), generator=gen)
    attention = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids[:, 0] = 0  # <s>
    ids[torch.arange(b), lengths - 1] = 2  # </s>
    ids[attention == 0] = 1  # <pad>
    return ids, attention


def test_mask_tokens_spares_specials_and_padding_and_hits_prob():
    ids, attention = _token_batch()
    original = ids.clone()
    gen = torch.Generator().manual_seed(1)
    out = mask_tokens(ids, attention, [0, 1, 2], mask_token_id=4, prob=0.3, generator=gen)
    assert torch.equal(ids, original)
    masked = out == 4
    protected = (ids == 0) | (ids == 2) | (attention == 0)
    assert not masked[protected].any()
    assert torch.equal(out[~masked], ids[~masked])
    eligible = int((~protected).sum())
    assert eligible > 5000
    assert abs(int(masked.sum()) / eligible - 0.3) < 0.02


def test_mask_tokens_limits_mask_form_and_determinism():
    ids, attention = _token_batch(8, 64)
    special_mask = ((ids == 0) | (ids == 2)).long()
    assert torch.equal(mask_tokens(ids, attention, [0, 2], 4, 0.0), ids)
    full = mask_tokens(ids, attention, special_mask, 4, 1.0)
    assert torch.equal(full == 4, (special_mask == 0) & (attention == 1))
    a = mask_tokens(ids, attention, special_mask, 4, 0.5, torch.Generator().manual_seed(3))
    b = mask_tokens(ids, attention, [0, 2], 4, 0.5, torch.Generator().manual_seed(3))
    c = mask_tokens(ids, attention, [0, 2], 4, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="shape"):
        mask_tokens(ids, attention, special_mask[:, :3], 4, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mask_tokens(ids, attention, [0], 4, 1.5)
