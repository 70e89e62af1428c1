"""AETNet: an unmodified LayoutLMv3 task model enriched by two aligners, trained with alignment losses.

The structure mirrors the split between inference and training (spec section 1):

* inference parts, saved by :meth:`AETNetModel.save_inference`: ``fusion`` (the stock
  ``LayoutLMv3For{Token,Sequence}Classification`` / ``LayoutLMv3ForQuestionAnswering``),
  ``image_aligner`` (``ViTModel``) and ``text_aligner`` (``RobertaModel``). Their outputs are added to
  LayoutLMv3's embeddings through :func:`aetnet.strategies.aet.fusion.fused_features`, at inference too.
* training-only parts, in the submodule ``alignment``
  (:class:`~aetnet.strategies.aet.builder.MomentumContrast`, the one owner of the projection heads, the
  momentum (EMA) copies of both aligners and both heads, the two feature queues and the learnable
  temperature; the four losses of a batch are in :mod:`aetnet.strategies.aet.alignment`). They are never
  needed to predict and are not saved with the inference model; trainer checkpoints (``--resume``) hold
  them because they save the whole ``state_dict``.

The training step: :meth:`AETNetModel.forward` returns the weighted loss; after the optimizer step the
trainer calls :meth:`AETNetModel.momentum_update` (through the strategy's ``after_optimizer_step``), the
EMA of the momentum encoders with the weights the optimizer just wrote.

Interpretations of the spec made here:

* PITA uses the single online ViT pass (its patch outputs) and the online text-aligner hidden states
  as token representations, both in the aligners' own width (768 for base).
* Grids other than 14x14 (tiny test models): ``aet.pita_cell`` is given for a 14x14 grid and scaled by
  ``14 / grid`` (1000/14 -> 1000/grid, 72 -> 1008/grid); the released code's 9 GLITC image locals use
  avg-pool(5, stride 4) on 14x14 and an adaptive 3x3 average pool on any other grid.
* Momentum passes, GLITC image locals and the missing-I+ fallback: see :mod:`aetnet.strategies.aet.builder`.
* PITA maps each token by its own word box (``word_bbox``, ``aet.pita_boxes=word``) or by the boxes
  LayoutLMv3 sees (``pita_boxes=model``, the released code). ``pita_coverage`` (share of text tokens
  PITA uses) is returned beside the loss terms.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import RobertaModel, ViTModel
from transformers.utils import ModelOutput

from aetnet.data.encoding.augment import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAYOUTLMV3_MEAN,
    LAYOUTLMV3_STD,
    renormalize,
)
from aetnet.errors import AetnetError
from aetnet.models.relpos import trains_relative_position_biases
from aetnet.models.task_model import TaskModel
from aetnet.strategies.aet.aligners import build_image_aligner, build_text_aligner
from aetnet.strategies.aet.alignment import alignment_losses
from aetnet.strategies.aet.builder import MomentumContrast
from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.aet.fusion import fused_features
from aetnet.strategies.aet.pita import pita_coverage

logger = logging.getLogger(__name__)

__all__ = ["AETNetModel", "AETNetOutput", "FUSION_FILE"]

#: Inference settings saved beside the weights (how the ViT input is normalised).
FUSION_FILE = "aet_fusion.json"
VIT_NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}
_KINDS = {
    "LayoutLMv3ForTokenClassification": "token",
    "LayoutLMv3ForSequenceClassification": "sequence",
    "LayoutLMv3ForQuestionAnswering": "qa",
    "LayoutLMv3ForRelationExtraction": "relation",
}
_NO_WORD_BOX_WARNED = False


@dataclass
class AETNetOutput(ModelOutput):
    """Total loss, the task outputs and every loss term (terms are None when not computed)."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    start_logits: Tensor | None = None
    end_logits: Tensor | None = None
    task_loss: Tensor | None = None
    ditc_loss: Tensor | None = None
    imc_loss: Tensor | None = None
    glitc_loss: Tensor | None = None
    pita_loss: Tensor | None = None
    pita_coverage: Tensor | None = None


def _freeze_gradless_biases(fusion: nn.Module) -> None:
    """Mark LayoutLMv3's relative-position bias tables as frozen.

    transformers reads them under ``torch.no_grad`` (a lookup table it never trains), so they never
    receive a gradient; left trainable, DDP with ``find_unused_parameters=False`` stops at the second
    step waiting for their gradients. Freezing them changes nothing else (the optimizer skips a
    parameter without gradient).
    """
    encoder = getattr(getattr(fusion, "layoutlmv3", None), "encoder", None)
    if trains_relative_position_biases(encoder):  # model.train_relative_position_bias: they get gradients
        return
    for name in ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias"):
        table = getattr(encoder, name, None)
        if isinstance(table, nn.Module):
            table.requires_grad_(False)


class AETNetModel(TaskModel, nn.Module):
    """LayoutLMv3 + aligners; in training also the four alignment losses (spec sections 1-2).

    Args:
        fusion: a ``LayoutLMv3For{Token,Sequence}Classification`` / ``ForQuestionAnswering`` model.
        image_aligner: ``ViTModel`` whose output matches LayoutLMv3's visual tokens.
        text_aligner: ``RobertaModel`` reading LayoutLMv3's ``input_ids``.
        aet: loss weights and options; ``None`` builds an inference-only model (no ``alignment``).
        vit_norm: ``imagenet`` or ``clip``, the ViT input normalisation (default ``aet.vit_norm``).
        pixel_mean, pixel_std: the normalisation of the ``pixel_values`` LayoutLMv3 receives.
        mask_token_id, special_token_ids: the tokenizer's mask id and special ids, needed only for
            ``aet.text_view == "mask"``.
    """

    main_input_name = "input_ids"
    #: The EMA averages only the parameters that train online (``AETLoraModel``: adapters and heads).
    ema_trainable_only = False
    # The Trainer must scale the loss for gradient accumulation itself (forward takes **kw).
    accepts_loss_kwargs = False

    def __init__(
        self,
        fusion: nn.Module,
        image_aligner: ViTModel,
        text_aligner: RobertaModel,
        aet: AETConfig | None = None,
        *,
        vit_norm: str | None = None,
        pixel_mean: Sequence[float] = LAYOUTLMV3_MEAN,
        pixel_std: Sequence[float] = LAYOUTLMV3_STD,
        mask_token_id: int | None = None,
        special_token_ids: Sequence[int] = (),
    ) -> None:
        super().__init__()
        kind = _KINDS.get(type(fusion).__name__)
        if kind is None:
            raise AetnetError(
                f"AETNet fusion model must be one of {', '.join(_KINDS)}, got {type(fusion).__name__}; "
                "build it with aetnet.strategies.base.load_task_model."
            )
        self.kind = kind
        self.fusion = fusion
        _freeze_gradless_biases(fusion)
        self.image_aligner = image_aligner
        self.text_aligner = text_aligner
        self.aet = aet
        self.vit_norm = vit_norm or (aet.vit_norm if aet is not None else "imagenet")
        if self.vit_norm not in VIT_NORMS:
            raise AetnetError(f"vit_norm={self.vit_norm!r} is not valid; choose one of: imagenet, clip")
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)
        image_size, patch = image_aligner.config.image_size, image_aligner.config.patch_size
        if not (isinstance(image_size, int) and isinstance(patch, int)):
            raise AetnetError(
                "image aligner: image_size and patch_size must be single integers (square patches)."
            )
        self.grid = image_size // patch
        self.mask_token_id = mask_token_id
        self.special_token_ids = tuple(int(i) for i in special_token_ids)
        self.alignment: MomentumContrast | None = None
        if aet is not None and (kind != "sequence" or aet.alignment_for_classification):
            if aet.text_view == "mask" and mask_token_id is None:
                raise AetnetError(
                    "aet.text_view=mask needs the tokenizer's mask token id; pass mask_token_id (the aet "
                    "strategy does) or set aet.text_view=none."
                )
            self.alignment = MomentumContrast(image_aligner, text_aligner, aet, mask_token_id=mask_token_id,
                                              special_token_ids=self.special_token_ids,
                                              trainable_only=self.ema_trainable_only)
        elif aet is not None:
            logger.info("aet.alignment_for_classification is off: %s trains with the task loss only", kind)

    # ------------------------------------------------------------------ inference path
    def vit_pixels(self, pixel_values: Tensor) -> Tensor:
        """LayoutLMv3's (B, 3, S, S) ``pixel_values`` renormalised for the ViT (same geometry)."""
        mean, std = VIT_NORMS[self.vit_norm]
        return renormalize(pixel_values, self.pixel_mean, self.pixel_std, mean, std)

    def forward(
        self,
        input_ids: Tensor,
        bbox: Tensor,
        attention_mask: Tensor,
        pixel_values: Tensor,
        labels: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        aug_pixel_values: Tensor | None = None,
        doc_ids: Tensor | None = None,
        word_bbox: Tensor | None = None,
        **kw,
    ) -> AETNetOutput:
        """Aligners -> fused LayoutLMv3 -> task loss; in training also the alignment losses.

        Args:
            input_ids: (B, L) token ids.
            bbox: (B, L, 4) boxes on the 0-1000 scale.
            attention_mask: (B, L) 1 on tokens, 0 on padding.
            pixel_values: (B, 3, S, S) LayoutLMv3's clean image.
            labels: (B, L) token labels or (B,) document labels; None at inference.
            start_positions, end_positions: (B,) answer spans for QA.
            aug_pixel_values: (B, 3, S, S) augmented view I+ in the ViT normalisation (training).
            doc_ids: (B,) document index of each window; with ``aet.mask_same_document`` other
                windows of the same document are left out of every loss's negatives (batch and queue).
            word_bbox: (B, L, 4) each token's own word box, 0-1000 ([0, 0, 0, 0] for special, question
                and padding tokens): the boxes PITA maps with ``aet.pita_boxes=word``.
            **kw: further LayoutLMv3 inputs (e.g. ``token_type_ids``).

        Returns:
            :class:`AETNetOutput`: ``loss`` (weighted total, or the task loss outside training),
            ``logits`` (``start_logits``/``end_logits`` for QA) and each loss term.
        """
        vit_in = self.vit_pixels(pixel_values)
        image_hidden = self.image_aligner(pixel_values=vit_in).last_hidden_state  # (B, 1+P, H)
        text_hidden = self.text_aligner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = {"labels": labels, "start_positions": start_positions, "end_positions": end_positions}
        targets = {k: v for k, v in targets.items() if v is not None}
        with fused_features(self.fusion, text_features=text_hidden, image_features=image_hidden):
            out = self.fusion(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask,
                              pixel_values=pixel_values, **targets, **kw)
        result = AETNetOutput(task_loss=out.loss)
        if self.kind == "qa":
            result.start_logits, result.end_logits = out.start_logits, out.end_logits
        else:
            result.logits = out.logits
        if not (self.training and self.alignment is not None):
            result.loss = out.loss
            return result

        pita_bbox = self._pita_boxes(bbox, word_bbox)
        aet = self.aet
        momentum = self.alignment.momentum_features(vit_in, input_ids, attention_mask, aug_pixel_values)
        terms = alignment_losses(self.alignment, aet, image_hidden, text_hidden, momentum, pita_bbox, attention_mask,
                                 doc_ids if aet.mask_same_document else None, grid=self.grid, pita_cell=self.pita_cell)
        total = sum(getattr(aet, f"{name}_weight") * value for name, value in terms.items())
        if out.loss is not None:
            total = total + aet.task_weight * out.loss
        result.loss = total
        for name, value in terms.items():
            setattr(result, f"{name}_loss", value)
        result.pita_coverage = pita_coverage(pita_bbox, attention_mask, self.grid, self.pita_cell, aet.pita_rule)
        return result

    @property
    def uses_word_boxes(self) -> bool:
        """Whether training batches should carry ``word_bbox`` (PITA maps word boxes)."""
        return self.alignment is not None and self.aet.pita_boxes == "word"

    @property
    def pita_cell(self) -> float:
        """``aet.pita_cell`` (given for a 14x14 grid) scaled to this model's patch grid."""
        return self.aet.pita_cell * 14 / self.grid

    def _pita_boxes(self, bbox: Tensor, word_bbox: Tensor | None) -> Tensor:
        """The (B, L, 4) boxes PITA maps: the word boxes under ``aet.pita_boxes=word``, else ``bbox``."""
        global _NO_WORD_BOX_WARNED
        if self.aet.pita_boxes == "model":
            return bbox
        if word_bbox is None:
            if not _NO_WORD_BOX_WARNED:
                logger.warning("aet.pita_boxes=word but the batch has no word_bbox (build it with "
                               "Collator(word_boxes=True)): PITA maps the boxes LayoutLMv3 sees instead")
                _NO_WORD_BOX_WARNED = True
            return bbox
        if word_bbox.shape != bbox.shape:
            raise AetnetError(f"word_bbox has shape {tuple(word_bbox.shape)} but bbox has {tuple(bbox.shape)}; "
                              "give one word box per token (Collator(word_boxes=True) does)")
        return word_bbox

    # ------------------------------------------------------------------ training path
    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> bool:
        """The step hook: one EMA step of the momentum encoders (:meth:`MomentumContrast.momentum_update`).

        The trainer calls it once right after every optimizer step (the ``aet`` strategy's
        ``after_optimizer_step``), with the weights the optimizer just wrote; never during evaluation.

        Args:
            m: momentum coefficient; default ``aet.momentum``.

        Returns:
            True when applied; False (nothing changes) in eval mode or without an alignment part.
        """
        if self.alignment is None:
            return False
        return self.alignment.momentum_update(m)

    def optimizer_param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: no decay on biases, normalisation weights and the temperature.

        Args:
            weight_decay: decay of the remaining trainable parameters.

        Returns:
            Two groups ``[{"params": decayed, "weight_decay": wd}, {"params": rest, "weight_decay": 0}]``.
        """
        norm_params = {id(p) for mod in self.modules() if isinstance(mod, (nn.LayerNorm, nn.GroupNorm))
                       for p in mod.parameters(recurse=False)}
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            owner = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
            # Module-type check for LayerNorm, name check for other norms (e.g. RMSNorm-style modules).
            exempt = (name.endswith("bias") or id(param) in norm_params or name == "alignment.temp"
                      or "norm" in owner.lower())
            (no_decay if exempt else decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def on_train_data(self, num_examples: int) -> None:
        """Warn when the queue is longer than the training set (most entries would stay random)."""
        if self.alignment is not None:
            self.alignment.check_capacity(num_examples)

    def training_only_numel(self) -> tuple[int, int]:
        """What only training needs, counted once per tensor: the ``alignment`` part's parameters
        (momentum copies, projections, temperature) and its queue entries (floating buffers,
        2 x embed_dim x queue_size values); (0, 0) for an inference-only model."""
        if self.alignment is None:
            return 0, 0
        params = {id(p): p.numel() for p in self.alignment.parameters()}
        buffers = {id(b): b.numel() for b in self.alignment.buffers() if b.is_floating_point()}
        return sum(params.values()), sum(buffers.values())

    # ------------------------------------------------------------------ saving
    def save_inference(self, folder: str | Path) -> None:
        """Save what prediction needs: ``fusion`` in ``folder``, aligners in ``image_aligner/`` and
        ``text_aligner/`` (safetensors), and ``aet_fusion.json``; no momentum copies, queues or heads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.fusion.save_pretrained(folder)
        self.image_aligner.save_pretrained(folder / "image_aligner")
        self.text_aligner.save_pretrained(folder / "text_aligner")
        settings = {"vit_norm": self.vit_norm, "pixel_mean": list(self.pixel_mean),
                    "pixel_std": list(self.pixel_std)}
        (folder / FUSION_FILE).write_text(json.dumps(settings, indent=2))

    @classmethod
    def load_inference(cls, folder: str | Path, kind: str) -> AETNetModel:
        """Load a folder written by :meth:`save_inference` as an inference-only model (eval mode).

        Args:
            folder: the model folder.
            kind: ``token``, ``sequence`` or ``qa`` (selects the LayoutLMv3 head class).
        """
        from aetnet.models.heads import head_class

        folder = Path(folder)
        settings_path = folder / FUSION_FILE
        if not settings_path.is_file():
            raise AetnetError(f"{folder}: not an AETNet model folder (no {FUSION_FILE}); pass RUN_DIR/model.")
        settings = json.loads(settings_path.read_text())
        fusion = head_class(kind).from_pretrained(folder)
        image_aligner = build_image_aligner(folder / "image_aligner", layer_norm_eps=None)
        text_aligner = build_text_aligner(folder / "text_aligner")
        model = cls(fusion, image_aligner, text_aligner, None, vit_norm=settings["vit_norm"],
                    pixel_mean=settings["pixel_mean"], pixel_std=settings["pixel_std"])
        return model.eval()
