"""Settings of the ``aet`` strategy (section ``aet:`` of recipes, ``aet.x=...`` overrides); ``aet-lora`` reads them too.

The defaults are the paper's; the options that reproduce the released code are listed in
``docs/reference-fidelity.md`` and the method spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from aetnet.config.parse import check_choice
from aetnet.errors import AetnetError


@dataclass
class AETConfig:
    """Alignment-enriched tuning: loss weights and every option of the spec (paper defaults)."""

    task_weight: float = 1.0
    """Weight of the task's own loss (token labels, class, answer span, links) in the total loss."""
    ditc_weight: float = 1.0
    """Weight of DITC, the document-level image-text contrastive loss (negatives from the batch and the queues)."""
    imc_weight: float = 1.0
    """Weight of IMC, the intra-modal contrastive loss (image against its augmented view, text against its view)."""
    glitc_weight: float = 1.0
    """Weight of GLITC, the global-local loss (a document's global feature against its own patch/token features)."""
    pita_weight: float = 1.0
    """Weight of PITA, the patch-level alignment of image patches with the text tokens they hold."""
    alpha: float = 0.4
    """Share of the momentum soft targets in DITC's targets (ALBEF; 0: plain one-hot InfoNCE, the released code)."""
    temp: float = 0.07
    """Initial contrastive temperature tau (learned during training, clamped to [0.001, 0.5])."""
    queue_size: int = 4096
    """Momentum features kept per modality in each queue, the contrastive negatives (K)."""
    momentum: float = 0.995
    """EMA coefficient m of the momentum aligners: ``theta_m <- m*theta_m + (1-m)*theta`` once per optimizer step."""
    embed_dim: int = 256
    """Width of the contrastive projection heads (the unit-norm features the losses compare)."""
    pita_form: str = "cosine"
    """PITA loss: ``cosine`` (mean cosine distance over patches, the paper) or ``ce`` (cross-entropy of
    patch-token similarities, the released code)."""
    pita_cell: float = 1000 / 14
    """Side of a PITA grid cell in LayoutLMv3's 0-1000 box coordinates (1000/14: one ViT patch; released: 72)."""
    pita_skip_special: bool = True
    """PITA ignores tokens whose box is ``[0, 0, 0, 0]`` (``<s>``, ``</s>``, padding); ``false``: the released code."""
    pita_mask_empty: bool = True
    """PITA counts only patches that hold at least one token (``false``: every patch, the released code)."""
    pita_rule: str = "inside"
    """``inside``: a token counts when its whole box lies in one cell (``floor(x0/cell) == floor(x1/cell)``,
    as released); ``center``: the cell holding the box centre (every text token counts)."""
    pita_boxes: str = "word"
    """Boxes PITA maps: ``word`` (each token's own word box, ``word_bbox`` in the batch; the paper locates
    text with the OCR layout) or ``model`` (the boxes LayoutLMv3 sees, segment-level in the recipes: the
    released code)."""
    momentum_image: str = "both"
    """``both``: the momentum ViT runs on [I; I+] (v~ from I, v+ from I+); ``augmented``: once on I+ only,
    whose output is both v~ and v+ and gives the GLITC image locals (the released code)."""
    glitc_image_locals: int = 196
    """196: every momentum patch; 9: the released code's 3x3 average pooling."""
    augment_main_image: bool = False
    """Released code: the main image is augmented too (even at evaluation)."""
    vit_norm: str = "imagenet"
    """Pixel normalisation of the ViT image aligner's input: ``imagenet`` (DeiT) or ``clip`` mean and std."""
    text_view: str = "none"
    """``none`` (w+ differs from w~ by dropout only, as released) or ``mask`` (token masking)."""
    mask_prob: float = 0.15
    """Probability that each ordinary token is replaced by the mask token in the text view T+ (``text_view=mask``)."""
    alignment_for_classification: bool = True
    """Document classification (``rvl-cdip``, ``classify``) trains with the alignment losses too; ``false``:
    the task loss only."""
    mask_same_document: bool = False
    """Windows of one long document are not each other's negatives (batch and queue, DITC/IMC/GLITC)."""

    def __post_init__(self) -> None:
        check_choice("aet.pita_form", self.pita_form, ("cosine", "ce"))
        check_choice("aet.vit_norm", self.vit_norm, ("imagenet", "clip"))
        check_choice("aet.text_view", self.text_view, ("none", "mask"))
        check_choice("aet.glitc_image_locals", self.glitc_image_locals, (196, 9))
        check_choice("aet.pita_rule", self.pita_rule, ("inside", "center"))
        check_choice("aet.pita_boxes", self.pita_boxes, ("word", "model"))
        check_choice("aet.momentum_image", self.momentum_image, ("both", "augmented"))
        if not 0.0 <= self.momentum <= 1.0:
            raise AetnetError(f"aet.momentum={self.momentum} must lie in [0, 1]")
        if self.queue_size < 1:
            raise AetnetError(f"aet.queue_size={self.queue_size} must be positive")
