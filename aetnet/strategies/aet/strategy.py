"""The ``aet`` strategy: alignment-enriched tuning (AETNet) of a LayoutLMv3 task model.

``build`` composes :class:`aetnet.strategies.aet.model.AETNetModel` from the task model and the two aligners,
``extra_views`` adds the augmented image I+ (and, with the released-code option, augments the main
image), ``after_optimizer_step`` runs the EMA step of the momentum encoders (the trainer calls it right
after every optimizer step), and ``load`` reads a saved inference folder back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import TrainerCallback

from aetnet.config.settings import RunConfig
from aetnet.data.encoding.augment import momentum_view, to_tensor_normalized
from aetnet.errors import AetnetError
from aetnet.strategies.aet.aligners import build_image_aligner, build_text_aligner, check_compatible
from aetnet.strategies.aet.model import VIT_NORMS, AETNetModel
from aetnet.strategies.base import BasePaths, Strategy, load_task_model

logger = logging.getLogger(__name__)

#: Photometric operations only, so an augmented main image keeps its geometry (boxes stay on patches).
_PHOTOMETRIC_OPS = ("sharpness", "autocontrast", "equalize", "posterize")


class AETViews:
    """Per-item image views for AET: ``aug_pixel_values`` (I+) and optionally an augmented main image.

    Each item draws from ``numpy.random.default_rng([seed, index, epoch])``, with ``epoch`` set by
    :class:`EpochCallback` at the start of every epoch, so a run is reproducible, every epoch sees
    a new view, and a run resumed from a checkpoint sees exactly the views of the uninterrupted run.
    The views are built in the DataLoader's worker processes; the epoch lives in shared memory, so
    persistent workers (which keep their copy of this object across epochs) see it change.

    Args:
        size: LayoutLMv3's image side (I+ has the same size as the clean image).
        vit_mean, vit_std: the ViT input normalisation (I+ goes to the momentum ViT).
        main_mean, main_std: LayoutLMv3's normalisation (for an augmented main image).
        seed: run seed.
        augment_main: also replace ``pixel_values`` by a photometrically augmented page (released code).
    """

    def __init__(self, size: int, vit_mean: Sequence[float], vit_std: Sequence[float],
                 main_mean: Sequence[float], main_std: Sequence[float], seed: int = 0,
                 augment_main: bool = False) -> None:
        self.size = int(size)
        self.vit_mean, self.vit_std = tuple(vit_mean), tuple(vit_std)
        self.main_mean, self.main_std = tuple(main_mean), tuple(main_std)
        self.seed = int(seed)
        self.augment_main = augment_main
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch the views are drawn for (shared with the DataLoader's worker processes)."""
        return int(self._epoch)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.fill_(int(value))

    def __call__(self, image: Image.Image, index: int) -> dict[str, torch.Tensor]:
        """Views of one page.

        Returns:
            ``{"aug_pixel_values": (3, S, S)}`` and, with ``augment_main``, ``"pixel_values": (3, S, S)``.
        """
        rng = np.random.default_rng([self.seed, int(index), self.epoch])
        views = {"aug_pixel_values": to_tensor_normalized(momentum_view(image, self.size, rng), self.size,
                                                          self.vit_mean, self.vit_std)}
        if self.augment_main:
            # Whole page, exact aspect ratio: the crop is the full image, so boxes still match patches.
            ratio = image.width / image.height
            main = momentum_view(image, self.size, rng, crop_scale=(1.0, 1.0), crop_ratio=(ratio, ratio),
                                 ops=_PHOTOMETRIC_OPS)
            views["pixel_values"] = to_tensor_normalized(main, self.size, self.main_mean, self.main_std)
        return views


class EpochCallback(TrainerCallback):
    """Tells :class:`AETViews` which epoch starts (also the epoch a resumed run starts in)."""

    def __init__(self, views: AETViews) -> None:
        self.views = views

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.views.epoch = int(state.epoch or 0)


class PitaCoverageCallback(TrainerCallback):
    """Warns once when the logged ``pita_coverage`` (share of text tokens PITA uses) is under 5 %.

    Below that PITA aligns almost nothing (e.g. segment boxes that rarely fit in one cell); the
    warning names the settings that change it.
    """

    threshold = 0.05

    def __init__(self) -> None:
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        coverage = (logs or {}).get("pita_coverage")
        if self.warned or coverage is None or coverage >= self.threshold:
            return
        self.warned = True
        logger.warning("PITA uses only %.1f%% of the text tokens (pita_coverage %.4f < %.2f): its loss is "
                       "nearly empty; map word boxes (aet.pita_boxes=word) or use aet.pita_rule=center",
                       100 * coverage, coverage, self.threshold)


class AETStrategy(Strategy):
    """Alignment-enriched tuning: LayoutLMv3 + ViT and RoBERTa aligners + DITC/IMC/GLITC/PITA."""

    name = "aet"
    #: The model can keep windows of one document apart (``aet.mask_same_document``).
    uses_doc_ids = True
    #: The training views :meth:`extra_views` made (their epoch follows training: :class:`EpochCallback`).
    _views: AETViews | None = None

    def build(self, task, cfg: RunConfig, paths: BasePaths, labels: list[str] | None, processor) -> AETNetModel:
        """The AETNet model: fusion from ``paths.layoutlmv3``, aligners from their paths.

        Raises:
            AetnetError: a missing aligner path or aligners that do not fit the LayoutLMv3.
        """
        if not paths.image_aligner or not paths.text_aligner:
            raise AetnetError(
                "strategy aet needs both aligners; set model.image_aligner and model.text_aligner in the "
                "recipe (e.g. facebook/deit-base-patch16-224 and roberta-base) or use --base tiny."
            )
        fusion = load_task_model(task.kind, paths.layoutlmv3, labels, cfg)
        image_aligner = build_image_aligner(paths.image_aligner)
        text_aligner = build_text_aligner(paths.text_aligner)
        check_compatible(fusion.config, image_aligner, text_aligner)
        # The processor says how LayoutLMv3's pixel_values are normalised (to renormalise for the ViT)
        # and which ids the text view T+ may mask.
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
        return AETNetModel(fusion, image_aligner, text_aligner, cfg.aet,
                           pixel_mean=image_processor.image_mean, pixel_std=image_processor.image_std,
                           mask_token_id=tokenizer.mask_token_id, special_token_ids=tokenizer.all_special_ids)

    def extra_views(self, cfg: RunConfig, processor) -> AETViews:
        """I+ for every training item (and the augmented main image with ``aet.augment_main_image``)."""
        image_processor = processor.image_processor
        size = image_processor.size
        side = int(size) if isinstance(size, int) else int(size["height"])
        vit_mean, vit_std = VIT_NORMS[cfg.aet.vit_norm]
        self._views = AETViews(side, vit_mean, vit_std, image_processor.image_mean, image_processor.image_std,
                               seed=cfg.train.seed, augment_main=cfg.aet.augment_main_image)
        return self._views

    def callbacks(self, model: nn.Module, cfg: RunConfig) -> list:
        """The epoch for the views and the PITA coverage check."""
        views = self._views
        return [PitaCoverageCallback()] + ([EpochCallback(views)] if views is not None else [])

    def after_optimizer_step(self, model: AETNetModel) -> None:
        """The EMA step of the momentum encoders, with the weights the optimizer just wrote."""
        model.momentum_update()

    def load(self, path: str | Path, meta: dict[str, Any]) -> AETNetModel:
        """The inference model saved in ``path`` (``aetnet.json`` metadata gives the task kind)."""
        return AETNetModel.load_inference(path, meta["kind"])
