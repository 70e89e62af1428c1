"""The four alignment losses of one training batch: DITC, IMC, GLITC and PITA (spec section 2).

:func:`alignment_losses` projects the online CLS features, reads the queues and the momentum features
from :class:`~aetnet.strategies.aet.builder.MomentumContrast` (the ``alignment`` part of the model),
computes each unweighted term (:mod:`aetnet.strategies.aet.losses`, :mod:`aetnet.strategies.aet.pita`),
then enqueues the batch's momentum features. :class:`~aetnet.strategies.aet.model.AETNetModel` weights
the terms and adds the task loss.
"""

from __future__ import annotations

from torch import Tensor

from aetnet.strategies.aet.builder import MomentumContrast
from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.aet.losses import ditc_loss, glitc_loss, imc_loss
from aetnet.strategies.aet.pita import pita_loss

__all__ = ["alignment_losses"]


def alignment_losses(
    align: MomentumContrast,
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
        align: the model's momentum contrast part (projections, queues, temperature).
        aet: loss options.
        image_hidden: (B, 1 + P, H) online ViT output.
        text_hidden: (B, L, H) online RoBERTa hidden states.
        momentum: the batch's :meth:`MomentumContrast.momentum_features`.
        pita_bbox: (B, L, 4) the boxes PITA maps (0-1000).
        attention_mask: (B, L) 1 on tokens, 0 on padding.
        doc_ids: (B,) document index of each window, to leave same-document windows out of the negatives.
        grid: patches per side of the image aligner.
        pita_cell: ``aet.pita_cell`` scaled to this grid.

    Returns:
        ``{"ditc", "imc", "glitc", "pita"}``: each unweighted loss term (scalar).
    """
    m = momentum
    temp = align.temperature()  # clamped to TEMP_RANGE first
    image_feat = align.vision_proj(image_hidden[:, 0])  # v (B, D)
    text_feat = align.text_proj(text_hidden[:, 0])  # w (B, D)
    image_queue, text_queue, queue_ids = align.queued(with_ids=doc_ids is not None)

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
    align.enqueue(m["image"], m["text"], doc_ids)
    return terms
