"""The one owner of AETNet's momentum encoders and feature queues, in the style of MoCo's ``builder.py``.

:class:`MomentumContrast` is the ``alignment`` submodule of :class:`aetnet.strategies.aet.model.AETNetModel`.
It holds everything the contrastive losses need beyond the online aligners:

* the online projection heads ``vision_proj`` / ``text_proj`` (Linear H -> D, L2-normalised);
* the momentum (EMA) copies of both aligners and both heads: ``image_aligner_m``, ``text_aligner_m``,
  ``vision_proj_m``, ``text_proj_m`` (frozen, never given a gradient);
* the two feature queues ``image_queue`` / ``text_queue`` (:class:`~aetnet.strategies.aet.queue.FeatureQueue`);
* the learnable temperature ``temp``.

and exposes the three things a training step does with them:

* :meth:`MomentumContrast.momentum_features`: the momentum features of one batch (one momentum ViT and
  one momentum RoBERTa call, no gradient);
* :meth:`MomentumContrast.enqueue`: push the batch's momentum CLS features into both queues, after the
  losses (gathered across ranks under ``torch.distributed``);
* :meth:`MomentumContrast.momentum_update`: the EMA step ``theta_m <- m theta_m + (1 - m) theta`` over
  (online, momentum) pairs of both aligners and both heads, one fused call
  (:class:`~aetnet.strategies.aet.momentum.MomentumPairs`). The trainer calls it once right after every
  optimizer step (:meth:`aetnet.train.trainer.AetnetTrainer.after_optimizer_step`), never in evaluation.

The online aligners belong to the inference model (``AETNetModel.image_aligner`` / ``.text_aligner``,
saved with it), so this class refers to them without registering them: the state-dict keys stay
``alignment.image_aligner_m.*``, ``alignment.image_queue.queue``, ``alignment.temp`` and so on, and
trainer checkpoints from before this class existed resume unchanged.

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
from aetnet.strategies.aet.momentum import MomentumPairs, make_momentum_copy
from aetnet.strategies.aet.queue import FeatureQueue

logger = logging.getLogger(__name__)

__all__ = ["MomentumContrast", "TEMP_RANGE", "pool_image_locals"]

#: The range the learnable temperature is clamped to before every use.
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
class MomentumContrast(nn.Module):
    """Projection heads, momentum encoders, feature queues and temperature of AETNet (training only).

    Args:
        image_aligner: the online ViT; copied for ``image_aligner_m`` and averaged into it by
            :meth:`momentum_update` (referred to, not registered here).
        text_aligner: the online RoBERTa, likewise.
        aet: loss options; ``embed_dim``, ``queue_size``, ``temp`` and ``momentum`` are read here,
            ``momentum_image``, ``text_view``, ``mask_prob`` and ``glitc_image_locals`` by
            :meth:`momentum_features`.
        mask_token_id, special_token_ids: the tokenizer's mask id and special ids (the text view
            ``aet.text_view=mask`` masks tokens).
        trainable_only: the EMA averages only the parameters that train online (LoRA: the adapters and
            heads; frozen weights are equal in both copies from the start and stay so).

    The momentum copies are made here, from the aligners as they are now: build this after every change
    to the aligners (e.g. after LoRA injection).
    """

    def __init__(self, image_aligner: ViTModel, text_aligner: RobertaModel, aet: AETConfig, *,
                 mask_token_id: int | None = None, special_token_ids: Sequence[int] = (),
                 trainable_only: bool = False) -> None:
        super().__init__()
        self.aet = aet
        self.grid = image_aligner.config.image_size // image_aligner.config.patch_size
        self.mask_token_id = mask_token_id
        self.special_token_ids = tuple(int(i) for i in special_token_ids)
        self.trainable_only = trainable_only
        # A tuple is not registered as a submodule: the online aligners stay in the inference model only.
        self.online_aligners = (image_aligner, text_aligner)
        self.vision_proj = ProjectionHead(image_aligner.config.hidden_size, aet.embed_dim)
        self.text_proj = ProjectionHead(text_aligner.config.hidden_size, aet.embed_dim)
        self.image_aligner_m = make_momentum_copy(image_aligner)
        self.text_aligner_m = make_momentum_copy(text_aligner)
        self.vision_proj_m = make_momentum_copy(self.vision_proj)
        self.text_proj_m = make_momentum_copy(self.text_proj)
        self.image_queue = FeatureQueue(aet.embed_dim, aet.queue_size)
        self.text_queue = FeatureQueue(aet.embed_dim, aet.queue_size)
        self.temp = nn.Parameter(torch.tensor(float(aet.temp)))

    # ------------------------------------------------------------------ the EMA step
    def momentum_pairs(self) -> MomentumPairs:
        """The (online, momentum) pairs the EMA averages: both aligners and both projection heads."""
        image_aligner, text_aligner = self.online_aligners
        return MomentumPairs([(image_aligner, self.image_aligner_m), (text_aligner, self.text_aligner_m),
                              (self.vision_proj, self.vision_proj_m), (self.text_proj, self.text_proj_m)],
                             trainable_only=self.trainable_only)

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> bool:
        """One fused EMA step ``theta_m <- m theta_m + (1 - m) theta``; once per optimizer step.

        Args:
            m: momentum coefficient; default ``aet.momentum``.

        Returns:
            True when applied; False (nothing changes) in eval mode.
        """
        if not self.training:
            return False
        self.momentum_pairs().update(self.aet.momentum if m is None else m)
        return True

    # ------------------------------------------------------------------ momentum features of a batch
    @torch.no_grad()
    def momentum_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) ViT input -> (B, 1 + P, H) momentum ViT output (no gradient)."""
        return self.image_aligner_m(pixel_values=pixels).last_hidden_state

    @torch.no_grad()
    def momentum_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) ids -> (B, L, H) momentum RoBERTa hidden states (no gradient)."""
        return self.text_aligner_m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @torch.no_grad()
    def momentum_features(self, vit_in: Tensor, input_ids: Tensor, attention_mask: Tensor,
                          aug_pixel_values: Tensor | None) -> dict[str, Tensor]:
        """Momentum features of one batch: one momentum ViT and one momentum RoBERTa call.

        Args:
            vit_in: (B, 3, S, S) the clean image in the ViT normalisation.
            input_ids, attention_mask: (B, L) tokens and their mask.
            aug_pixel_values: (B, 3, S, S) augmented view I+ in the ViT normalisation, or None.

        Returns:
            ``image``/``text`` (B, D): v~ and w~; ``image_pos``/``text_pos`` (B, D): v+ and w+ (the same
            tensors as v~/w~ when that view is not computed separately); ``image_locals`` (B, N, D) with
            N = 196 or 9; ``text_locals`` (B, L-1, D).
        """
        global _NO_AUG_WARNED
        aet = self.aet
        B = input_ids.shape[0]
        if aug_pixel_values is None:
            if not _NO_AUG_WARNED:
                logger.warning("training batch has no aug_pixel_values: IMC uses the clean image as I+")
                _NO_AUG_WARNED = True
            aug_pixel_values = vit_in
        aug = aug_pixel_values.to(vit_in.dtype)
        if aet.momentum_image == "augmented":  # released: one pass on I+, v~ = v+
            image_m = self.momentum_image(aug)
            clean_m, pos_m = image_m, image_m
        else:
            image_m = self.momentum_image(torch.cat([vit_in, aug]))
            clean_m, pos_m = image_m[:B], image_m[B:]
        if aet.text_view == "mask":
            view_ids = mask_tokens(input_ids, attention_mask, self.special_token_ids, self.mask_token_id,
                                   aet.mask_prob)
            text_m = self.momentum_text(torch.cat([input_ids, view_ids]), attention_mask.repeat(2, 1))
            text_pos = self.text_proj_m(text_m[B:, 0])
        else:  # no text view: a second pass over the same tokens would only resample dropout
            text_m = self.momentum_text(input_ids, attention_mask)
            text_pos = None
        image = self.vision_proj_m(clean_m[:, 0])
        text = self.text_proj_m(text_m[:B, 0])
        # Project and L2-normalise the momentum patches first; the 9 released locals pool those.
        image_locals = self.vision_proj_m(clean_m[:, 1:])  # (B, P, D)
        if aet.glitc_image_locals == 9:
            image_locals = pool_image_locals(image_locals, self.grid)
        image_pos = image if pos_m is clean_m else self.vision_proj_m(pos_m[:, 0])
        return {"image": image, "text": text, "image_pos": image_pos,
                "text_pos": text if text_pos is None else text_pos,
                "image_locals": image_locals, "text_locals": self.text_proj_m(text_m[:B, 1:])}

    # ------------------------------------------------------------------ queues and temperature
    def temperature(self) -> Tensor:
        """The learnable temperature, clamped in place to :data:`TEMP_RANGE` first (the range the losses assume)."""
        with torch.no_grad():
            self.temp.clamp_(*TEMP_RANGE)
        return self.temp

    @torch.no_grad()
    def queued(self, with_ids: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Snapshots of both queues for this batch's losses: ``(image (D, K), text (D, K), ids (K,) or None)``.

        Copies, so that the enqueue after the losses cannot change what the losses (and their backward)
        read. ``ids`` (the document id of each column) only ``with_ids``.
        """
        image, text = self.image_queue.queue.clone(), self.text_queue.queue.clone()
        return image, text, self.image_queue.ids.clone() if with_ids else None

    @torch.no_grad()
    def enqueue(self, image: Tensor, text: Tensor, doc_ids: Tensor | None = None) -> None:
        """Push the batch's momentum CLS features (B, D) into the image and text queues.

        Call after the losses (this batch must not be its own negative). Under ``torch.distributed`` the
        features of all ranks are gathered, so every rank's queues stay equal.
        """
        self.image_queue.enqueue(image, doc_ids)
        self.text_queue.enqueue(text, doc_ids)

    def check_capacity(self, num_train_examples: int) -> bool:
        """Warn when the queues are longer than the training set (most entries would stay random)."""
        return self.image_queue.check_capacity(num_train_examples)
