"""Image and text views for the alignment losses, with PIL and numpy only (no torchvision).

- :func:`momentum_view` makes the augmented image I+ that only the momentum image aligner sees (IMC).
- :func:`to_tensor_normalized` and :func:`renormalize` give the online image aligner the same
  224x224 geometry as LayoutLMv3's ``pixel_values`` with its own normalisation, so token boxes still
  fall on the right patches for PITA.
- :func:`mask_tokens` makes a text view T+ for IMC (the released code has none).

All randomness comes from the generator passed in, so a seeded generator reproduces a view exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch import Tensor

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTLMV3_MEAN",
    "LAYOUTLMV3_STD",
    "MILD_OPS",
    "mask_tokens",
    "momentum_view",
    "random_resized_crop_box",
    "renormalize",
    "to_tensor_normalized",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: LayoutLMv3's image processor normalises with mean = std = 0.5 (pixels in [-1, 1]).
LAYOUTLMV3_MEAN = (0.5, 0.5, 0.5)
LAYOUTLMV3_STD = (0.5, 0.5, 0.5)
#: The released code feeds the ViT with CLIP statistics (a compatibility option).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Blur strength is specified for 224 px inputs (SimCLR/ALBEF); smaller views get a smaller radius.
_REFERENCE_SIZE = 224
_WHITE = (255, 255, 255)


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Sample a crop covering ``scale`` of the area with aspect ratio (w/h) in ``ratio``.

    Ten draws are tried (area uniform in ``scale``, ratio log-uniform); if none fits inside the
    image, the largest centred crop with the ratio clamped to ``ratio`` is used.

    Returns:
        ``(left, top, right, bottom)`` in pixels, within the image.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    image_ratio = width / height
    if image_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif image_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _shift_hue(image: Image.Image, hue: float) -> Image.Image:
    """Rotate the hue by ``hue`` turns (in [-0.5, 0.5]); uint8 arithmetic wraps around the circle."""
    hsv = np.array(image.convert("HSV"))
    shift = np.uint8(int(round(hue * 255)) % 256)
    hsv[..., 0] = hsv[..., 0] + shift
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _color_jitter(
    image: Image.Image, strengths: tuple[float, float, float, float], rng: np.random.Generator
) -> Image.Image:
    """Brightness, contrast, saturation and hue jitter, applied in a random order."""
    brightness, contrast, saturation, hue = strengths
    ops = [
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(max(0.0, 1 - brightness), 1 + brightness)),
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(max(0.0, 1 - contrast), 1 + contrast)),
        lambda im: ImageEnhance.Color(im).enhance(rng.uniform(max(0.0, 1 - saturation), 1 + saturation)),
        lambda im: _shift_hue(im, rng.uniform(-hue, hue)),
    ]
    for i in rng.permutation(len(ops)):
        image = ops[i](image)
    return image


def _mild_op(image: Image.Image, name: str, rng: np.random.Generator) -> Image.Image:
    """One RandAugment-style operation, at a strength that keeps the text legible."""
    if name == "rotate":
        # Pages are white: fill the uncovered corners with white rather than black.
        return image.rotate(rng.uniform(-10.0, 10.0), resample=Image.BILINEAR, fillcolor=_WHITE)
    if name == "sharpness":
        return ImageEnhance.Sharpness(image).enhance(rng.uniform(0.5, 1.5))
    if name == "autocontrast":
        return ImageOps.autocontrast(image)
    if name == "equalize":
        return ImageOps.equalize(image)
    if name == "posterize":
        return ImageOps.posterize(image, int(rng.integers(5, 8)))
    raise ValueError(f"unknown augmentation op '{name}'")


#: The operations :func:`momentum_view` draws from.
MILD_OPS = ("rotate", "sharpness", "autocontrast", "equalize", "posterize")


def momentum_view(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    *,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    p_jitter: float = 0.8,
    p_grayscale: float = 0.2,
    p_blur: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    num_ops: tuple[int, int] = (1, 2),
    ops: Sequence[str] = MILD_OPS,
) -> Image.Image:
    """The augmented view I+ of a page for the momentum image aligner.

    In order: RandomResizedCrop to ``size`` x ``size`` (bilinear), colour jitter with probability
    ``p_jitter`` (its four parts in random order), grayscale with probability ``p_grayscale`` (kept as
    3 equal channels), Gaussian blur with probability ``p_blur`` (sigma uniform in ``blur_sigma`` at
    224 px, scaled by ``size / 224``), then ``num_ops`` mild RandAugment-style operations drawn without
    replacement from ``ops``. No horizontal flip: mirrored text is not a plausible page.

    Args:
        image: the page, any PIL mode (converted to RGB).
        size: output side in pixels.
        rng: the only source of randomness.
        crop_scale, crop_ratio: area fraction and aspect-ratio range of the crop.
        jitter: brightness, contrast, saturation and hue strengths.
        p_jitter, p_grayscale, p_blur: probabilities of those steps.
        blur_sigma: Gaussian standard deviation range at 224 px.
        num_ops: inclusive range of how many mild operations to apply.
        ops: names of the mild operations to choose from (subset of :data:`MILD_OPS`).

    Returns:
        An RGB image of ``size`` x ``size``.
    """
    image = image.convert("RGB")
    box = random_resized_crop_box(image.width, image.height, rng, crop_scale, crop_ratio)
    image = image.resize((size, size), Image.BILINEAR, box=box)
    if rng.random() < p_jitter:
        image = _color_jitter(image, jitter, rng)
    if rng.random() < p_grayscale:
        image = image.convert("L").convert("RGB")
    if rng.random() < p_blur:
        sigma = rng.uniform(blur_sigma[0], blur_sigma[1]) * size / _REFERENCE_SIZE
        image = image.filter(ImageFilter.GaussianBlur(radius=sigma))
    count = int(rng.integers(num_ops[0], num_ops[1] + 1)) if ops else 0
    for i in rng.choice(len(ops), size=min(count, len(ops)), replace=False):
        image = _mild_op(image, ops[int(i)], rng)
    return image


def to_tensor_normalized(
    image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """Resize to ``size`` x ``size`` (bilinear, aspect ratio not kept, as LayoutLMv3's processor does)
    and normalise.

    Returns:
        ``(3, size, size)`` float32 tensor ``(pixel / 255 - mean) / std`` per channel.
    """
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def renormalize(
    pixel_values: Tensor,
    from_mean: Sequence[float],
    from_std: Sequence[float],
    to_mean: Sequence[float],
    to_std: Sequence[float],
) -> Tensor:
    """Change the normalisation of images without touching their geometry.

    Used to turn LayoutLMv3's ``pixel_values`` (mean = std = 0.5) into the ImageNet-normalised input of
    the online ViT: ``((x * from_std + from_mean) - to_mean) / to_std`` per channel, computed as one
    multiply-add.

    Args:
        pixel_values: ``(B, 3, H, W)`` (or ``(3, H, W)``) floating tensor.
        from_mean, from_std, to_mean, to_std: three values each.

    Returns:
        A new tensor shaped, typed and placed like ``pixel_values``.
    """
    if pixel_values.dim() not in (3, 4) or pixel_values.shape[-3] != 3:
        raise ValueError(f"renormalize expects (B, 3, H, W) images, got {tuple(pixel_values.shape)}")
    # Scale and shift in float64 on the host, then filled on the device: torch.tensor(list, device=cuda)
    # would be a blocking copy from pageable memory, a host-device sync at every forward.
    scale = [float(fs) / float(ts) for fs, ts in zip(from_std, to_std)]
    shift = [(float(fm) - float(tm)) / float(ts) for fm, tm, ts in zip(from_mean, to_mean, to_std)]

    def on_device(values: list[float]) -> Tensor:
        kw = {"dtype": pixel_values.dtype, "device": pixel_values.device}
        return torch.stack([torch.full((), v, **kw) for v in values]).view(3, 1, 1)

    return pixel_values * on_device(scale) + on_device(shift)


def _special_mask(
    input_ids: Tensor, special_tokens_mask_or_ids: Tensor | Iterable[int]
) -> Tensor:
    if isinstance(special_tokens_mask_or_ids, Tensor):
        if special_tokens_mask_or_ids.shape != input_ids.shape:
            raise ValueError(
                f"special_tokens_mask has shape {tuple(special_tokens_mask_or_ids.shape)} but input_ids "
                f"has {tuple(input_ids.shape)}; pass a mask of the same shape or a list of special ids"
            )
        return special_tokens_mask_or_ids.to(device=input_ids.device).bool()
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in sorted({int(i) for i in special_tokens_mask_or_ids}):
        special |= input_ids == token_id  # Python ints: no host-to-device copy of an id list per step
    return special


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    special_tokens_mask_or_ids: Tensor | Iterable[int],
    mask_token_id: int,
    prob: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A text view T+: each ordinary token is replaced by the mask token with probability ``prob``.

    Special tokens and padding (``attention_mask == 0``) are never replaced, so the view keeps the
    same length, boxes and padding as the original.

    Args:
        input_ids: ``(B, L)`` (any shape) token ids.
        attention_mask: same shape, 0 on padding; ``None`` when there is no padding.
        special_tokens_mask_or_ids: a tensor shaped like ``input_ids``, nonzero on special tokens (the
            tokenizer's ``special_tokens_mask``), or an iterable of special token ids (e.g.
            ``tokenizer.all_special_ids``).
        mask_token_id: the id written into masked positions.
        prob: masking probability in [0, 1].
        generator: torch generator for reproducible views (its device is used to draw).

    Returns:
        A new tensor like ``input_ids``; ``input_ids`` is not modified.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"masking probability must lie in [0, 1], got {prob}")
    eligible = ~_special_mask(input_ids, special_tokens_mask_or_ids)
    if attention_mask is not None:
        eligible &= attention_mask.to(input_ids.device).bool()
    draw_device = generator.device if generator is not None else input_ids.device
    draws = torch.rand(input_ids.shape, generator=generator, device=draw_device).to(input_ids.device)
    chosen = eligible & (draws < prob)
    return input_ids.masked_fill(chosen, int(mask_token_id))
