"""The training-only part of AETNet: alignment heads, momentum features and the four losses of a batch.

:class:`AlignmentHeads` is the ``alignment`` submodule of :class:`aetnet.strategies.aet.model.AETNetModel`:
the projection heads, the momentum (EMA) copies of both aligners and both heads, the two feature
queues and the learnable temperature. :func:`momentum_features` runs the momentum encoders on one
batch and :func:`alignment_losses` computes DITC, IMC, GLITC and PITA from them (spec section 2).

Interpretations of the spec made here:

* Momentum passes (spec section 2): the momentum RoBERTa runs once on T when there is no text view
  (``aet.text_view=none``: w+ is w~, as released) and on [T; T+] with ``text_view=mask``; the momentum
  ViT runs on [I; I+] (``aet.momentum_image=both``) or, as released, once on I+ only
  (``momentum_image=augmented``: that output is v~, v+ and the source of the GLITC image locals).
* GLITC image locals: the momentum patches are projected and L2-normalised first; the released code's
  9 locals are then average-pooled from those 196 unit vectors (so they are not unit-norm).
* When a training batch carries no ``aug_pixel_values``, I+ falls back to the clean ViT input (v+ then
  differs from v~ only by dropout); a warning says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import RobertaModel, ViTModel

from aetnet.data.encoding.augment import mask_tokens
from aetnet.models.checkpointing import runs_without_gradients
from aetnet.strategies.aet.aligners import ProjectionHead
from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.aet.losses import ditc_loss, glitc_loss, imc_loss
from aetnet.strategies.aet.momentum import make_momentum_copy
from aetnet.strategies.aet.pita import pita_loss
from aetnet.strategies.aet.queue import FeatureQueue

logger = logging.getLogger(__name__)

__all__ = ["AlignmentHeads", "TEMP_RANGE", "alignment_losses", "momentum_features", "pool_image_locals"]

TEMP_RANGE = (0.001, 0.5)
_NO_AUG_WARNED = False


def pool_image_locals(patches: Tensor, grid: int) -> Tensor:
    """The released code's 9 image locals: average-pool the patch grid to 3x3.

    Args:
        patches: (B, grid*grid, H) patch features, row-major (AETNet pools the projected, L2-normalised
            momentum patches, as the released code does).
        grid: patches per side.

    Returns:
        (B, 9, H): avg-pool kernel 5 stride 4 on a 14x14 grid, an adaptive 3x3 average otherwise.
    """
    B, P, H = patches.shape
    maps = patches.transpose(1, 2).reshape(B, H, grid, grid)
    pooled = F.avg_pool2d(maps, 5, 4) if grid == 14 else F.adaptive_avg_pool2d(maps, 3)
    return pooled.flatten(2).transpose(1, 2)


@runs_without_gradients
class AlignmentHeads(nn.Module):
    """Training-only parts of AETNet: projections, momentum copies, queues and temperature.

    Args:
        image_aligner: the online ViT (copied for the momentum encoder, not registered here).
        text_aligner: the online RoBERTa (copied likewise).
        aet: loss options; ``embed_dim``, ``queue_size`` and ``temp`` are read here.
    """

    def __init__(self, image_aligner: ViTModel, text_aligner: RobertaModel, aet: AETConfig) -> None:
        super().__init__()
        self.vision_proj = ProjectionHead(image_aligner.config.hidden_size, aet.embed_dim)
        self.text_proj = ProjectionHead(text_aligner.config.hidden_size, aet.embed_dim)
        self.image_aligner_m = make_momentum_copy(image_aligner)
        self.text_aligner_m = make_momentum_copy(text_aligner)
        self.vision_proj_m = make_momentum_copy(self.vision_proj)
        self.text_proj_m = make_momentum_copy(self.text_proj)
        self.image_queue = FeatureQueue(aet.embed_dim, aet.queue_size)
        self.text_queue = FeatureQueue(aet.embed_dim, aet.queue_size)
        self.temp = nn.Parameter(torch.tensor(float(aet.temp)))

    @torch.no_grad()
    def momentum_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) ViT input -> (B, 1 + P, H) momentum ViT output (no gradient)."""
        return self.image_aligner_m(pixel_values=pixels).last_hidden_state

    @torch.no_grad()
    def momentum_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, H) momentum RoBERTa hidden states (no gradient)."""
        return self.text_aligner_m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@torch.no_grad()
def momentum_features(align: AlignmentHeads, aet: AETConfig, vit_in: Tensor, input_ids: Tensor,
                      attention_mask: Tensor, aug_pixel_values: Tensor | None, *, grid: int,
                      mask_token_id: int | None, special_token_ids: Sequence[int]) -> dict[str, Tensor]:
    """Momentum features of one batch: one momentum ViT and one momentum RoBERTa call.

    Args:
        align: the alignment heads (momentum encoders and projections).
        aet: loss options (``momentum_image``, ``text_view``, ``mask_prob``, ``glitc_image_locals``).
        vit_in: (B, 3, S, S) the clean image in the ViT normalisation.
        input_ids, attention_mask: (B, L) tokens and their mask.
        aug_pixel_values: (B, 3, S, S) augmented view I+ in the ViT normalisation, or None.
        grid: patches per side of the image aligner.
        mask_token_id, special_token_ids: the tokenizer's mask id and special ids (``text_view=mask``).

    Returns:
        ``image``/``text`` (B, D): v~ and w~; ``image_pos``/``text_pos`` (B, D): v+ and w+ (the same
        tensors as v~/w~ when that view is not computed separately); ``image_locals`` (B, N, D) with
        N = 196 or 9; ``text_locals`` (B, L-1, D).
    """
    global _NO_AUG_WARNED
    B = input_ids.shape[0]
    if aug_pixel_values is None:
        if not _NO_AUG_WARNED:
            logger.warning("training batch has no aug_pixel_values: IMC uses the clean image as I+")
            _NO_AUG_WARNED = True
        aug_pixel_values = vit_in
    aug = aug_pixel_values.to(vit_in.dtype)
    if aet.momentum_image == "augmented":  # released: one pass on I+, v~ = v+
        image_m = align.momentum_image(aug)
        clean_m, pos_m = image_m, image_m
    else:
        image_m = align.momentum_image(torch.cat([vit_in, aug]))
        clean_m, pos_m = image_m[:B], image_m[B:]
    if aet.text_view == "mask":
        view_ids = mask_tokens(input_ids, attention_mask, special_token_ids, mask_token_id, aet.mask_prob)
        text_m = align.momentum_text(torch.cat([input_ids, view_ids]), attention_mask.repeat(2, 1))
        text_pos = align.text_proj_m(text_m[B:, 0])
    else:  # no text view: a second pass over the same tokens would only resample dropout
        text_m = align.momentum_text(input_ids, attention_mask)
        text_pos = None
    image = align.vision_proj_m(clean_m[:, 0])
    text = align.text_proj_m(text_m[:B, 0])
    # Project and L2-normalise the momentum patches first; the 9 released locals pool those.
    image_locals = align.vision_proj_m(clean_m[:, 1:])  # (B, P, D)
    if aet.glitc_image_locals == 9:
        image_locals = pool_image_locals(image_locals, grid)
    image_pos = image if pos_m is clean_m else align.vision_proj_m(pos_m[:, 0])
    return {"image": image, "text": text, "image_pos": image_pos,
            "text_pos": text if text_pos is None else text_pos,
            "image_locals": image_locals, "text_locals": align.text_proj_m(text_m[:B, 1:])}


def alignment_losses(
    align: AlignmentHeads,
    aet: AETConfig,
    image_hidden: Tensor,
    text_hidden: Tensor,
    momentum: dict[str, Tensor],
    pita_bbox: Tensor,
    attention_mask: Tensor,
    doc_ids: Tensor | None = None,
    *,
    grid: int,
    pita_cell: float,
) -> dict[str, Tensor]:
    """DITC, IMC, GLITC and PITA for one batch, then enqueue the momentum CLS features.

    Args:
        align: the alignment heads (projections, queues, temperature).
        aet: loss options.
        image_hidden: (B, 1 + P, H) online ViT output.
        text_hidden: (B, L, H) online RoBERTa hidden states.
        momentum: the batch's :func:`momentum_features`.
        pita_bbox: (B, L, 4) the boxes PITA maps (0-1000).
        attention_mask: (B, L) 1 on tokens, 0 on padding.
        doc_ids: (B,) document index of each window, to leave same-document windows out of the negatives.
        grid: patches per side of the image aligner.
        pita_cell: ``aet.pita_cell`` scaled to this grid.

    Returns:
        ``{"ditc", "imc", "glitc", "pita"}``: each unweighted loss term (scalar).
    """
    m = momentum
    with torch.no_grad():
        align.temp.clamp_(*TEMP_RANGE)  # keep tau inside the range the losses assume
    temp = align.temp
    image_feat = align.vision_proj(image_hidden[:, 0])  # v (B, D)
    text_feat = align.text_proj(text_hidden[:, 0])  # w (B, D)
    with torch.no_grad():
        image_queue = align.image_queue.queue.clone()
        text_queue = align.text_queue.queue.clone()
        queue_ids = align.image_queue.ids.clone() if doc_ids is not None else None

    terms = {
        "ditc": ditc_loss(image_feat, text_feat, m["image"], m["text"], image_queue, text_queue,
                          temp, aet.alpha, doc_ids=doc_ids, queue_ids=queue_ids),
        "imc": imc_loss(image_feat, text_feat, m["image_pos"], m["text_pos"], image_queue, text_queue,
                        temp, doc_ids=doc_ids, queue_ids=queue_ids),
        "glitc": 0.5 * (glitc_loss(image_feat, m["image_locals"], temp, doc_ids=doc_ids)
                        + glitc_loss(text_feat, m["text_locals"], temp, attention_mask[:, 1:], doc_ids=doc_ids)),
        "pita": pita_loss(image_hidden[:, 1:], text_hidden, pita_bbox, attention_mask, grid=grid,
                          form=aet.pita_form, cell=pita_cell, skip_special=aet.pita_skip_special,
                          mask_empty=aet.pita_mask_empty, rule=aet.pita_rule),
    }
    # After the losses: this batch must not be its own negative. Gathered across ranks inside.
    align.image_queue.enqueue(m["image"], doc_ids)
    align.text_queue.enqueue(m["text"], doc_ids)
    return terms
