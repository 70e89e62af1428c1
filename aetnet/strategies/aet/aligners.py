"""The two aligners of AETNet and their projection heads.

* Image aligner: a ViT-B/16 (``transformers.ViTModel`` without pooler) initialised from DeiT-base
  weights stored in ViT format (``facebook/deit-base-patch16-224``). ``DeiTModel`` is not used: its
  distillation token gives 1 + 1 + P tokens, one more than LayoutLMv3's visual tokens. DeiT was
  trained with LayerNorm eps 1e-6, while the hub config says 1e-12, hence the override.
* Text aligner: ``RobertaModel`` without pooler (``roberta-base``); it reads LayoutLMv3's own
  ``input_ids``/``attention_mask`` since both share the same BPE vocabulary. Loading a
  ``RobertaForMaskedLM`` checkpoint into ``RobertaModel`` drops the unused LM head.
* ``ProjectionHead``: Linear(H -> 256) + L2 normalisation, used by the contrastive losses.

Nothing here downloads at import time; hub ids are resolved only when a builder is called.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import is_offline_mode
from torch import nn
from transformers import LayoutLMv3Config, PretrainedConfig, RobertaConfig, RobertaModel, ViTConfig, ViTModel

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

DEIT_LAYER_NORM_EPS = 1e-6


def _offline() -> bool:
    """Whether hub access is off, reading the environment now (huggingface_hub caches it at import)."""
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().upper()
    return is_offline_mode() or env in {"1", "ON", "YES", "TRUE"}


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that names a folder is treated as a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _load(model_cls: type, name: str, field: str, **kwargs: Any) -> nn.Module:
    """Load ``model_cls`` from a local folder or hub id, turning load failures into one clear AetnetError."""
    if _looks_like_path(name) and not os.path.exists(os.path.expanduser(name)):
        raise AetnetError(f"{field}: the folder '{name}' does not exist; pass an existing checkpoint folder.")
    local = os.path.isdir(os.path.expanduser(name))
    offline = _offline()
    try:
        return model_cls.from_pretrained(
            os.path.expanduser(name) if local else name, local_files_only=offline, **kwargs
        )
    except OSError as err:
        if local:
            raise AetnetError(
                f"{field}: '{name}' is not a loadable {model_cls.__name__} checkpoint folder ({err}); pass a "
                f"folder written by save_pretrained."
            ) from err
        mode = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the Hugging Face hub was unreachable"
        raise AetnetError(
            f"{field}: the hub id '{name}' could not be loaded because {mode} and it is not in the local "
            f"cache; pass a local checkpoint folder instead, or go online once to download it."
        ) from err


def build_image_aligner(
    name_or_path: str | os.PathLike | None = None,
    config: ViTConfig | None = None,
    layer_norm_eps: float | None = DEIT_LAYER_NORM_EPS,
) -> ViTModel:
    """Build the ViT image aligner (no pooling layer).

    Args:
        name_or_path: hub id (e.g. ``"facebook/deit-base-patch16-224"``) or local folder of a ViT-format
            checkpoint. Mutually exclusive with ``config``.
        config: a ``ViTConfig`` for a randomly initialised aligner (tests, custom sizes).
        layer_norm_eps: LayerNorm epsilon forced when loading weights (DeiT uses 1e-6, its hub config
            says 1e-12); None keeps the checkpoint's value. Ignored with ``config``.

    Returns:
        A ``ViTModel`` whose ``last_hidden_state`` is (B, 1 + P, H) for pixel_values (B, C, S, S),
        P = (S / patch_size) ** 2, CLS first, after the final LayerNorm.

    Raises:
        AetnetError: both or neither source given, a missing folder, or a hub id that cannot be
            loaded (offline or unreachable and not cached).
    """
    if (name_or_path is None) == (config is None):
        raise AetnetError("build_image_aligner: pass exactly one of name_or_path or config.")
    if config is not None:
        return ViTModel(config, add_pooling_layer=False)
    kwargs: dict[str, Any] = {"add_pooling_layer": False}
    if layer_norm_eps is not None:
        kwargs["layer_norm_eps"] = layer_norm_eps
    model = _load(ViTModel, str(name_or_path), "image aligner", **kwargs)
    if getattr(model.config, "model_type", "vit") != "vit":
        logger.warning("image aligner %s has model_type %s, expected a ViT-format checkpoint",
                       name_or_path, model.config.model_type)
    return model


def build_text_aligner(
    name_or_path: str | os.PathLike | None = None,
    config: RobertaConfig | None = None,
) -> RobertaModel:
    """Build the RoBERTa text aligner (no pooling layer, no LM head).

    Args:
        name_or_path: hub id (e.g. ``"roberta-base"``) or local folder; a ``RobertaForMaskedLM``
            checkpoint loads too, its LM head is discarded. Mutually exclusive with ``config``.
        config: a ``RobertaConfig`` for a randomly initialised aligner.

    Returns:
        A ``RobertaModel`` whose ``last_hidden_state`` is (B, L, H) for input_ids (B, L).

    Raises:
        AetnetError: both or neither source given, a missing folder, or a hub id that cannot be loaded.
    """
    if (name_or_path is None) == (config is None):
        raise AetnetError("build_text_aligner: pass exactly one of name_or_path or config.")
    if config is not None:
        return RobertaModel(config, add_pooling_layer=False)
    return _load(RobertaModel, str(name_or_path), "text aligner", add_pooling_layer=False)


def tiny_image_aligner_config(
    hidden_size: int,
    image_size: int,
    patch_size: int,
    num_hidden_layers: int = 1,
    num_attention_heads: int = 2,
    intermediate_size: int | None = None,
    num_channels: int = 3,
) -> ViTConfig:
    """A small ViT config matching a tiny LayoutLMv3 (for tests and CPU smoke runs).

    Args:
        hidden_size: LayoutLMv3's hidden size (the features are added, so widths must match).
        image_size: LayoutLMv3's ``input_size``.
        patch_size: LayoutLMv3's ``patch_size``; the ViT then yields 1 + (image_size/patch_size)^2 tokens.
        num_hidden_layers: transformer layers.
        num_attention_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: MLP width, 2 * hidden_size by default.
        num_channels: image channels.

    Returns:
        A ``ViTConfig`` with dropout off and DeiT's LayerNorm eps (1e-6).
    """
    if image_size % patch_size:
        raise AetnetError(f"image_size {image_size} must be a multiple of patch_size {patch_size}.")
    return ViTConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=num_channels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=DEIT_LAYER_NORM_EPS,
    )


def tiny_text_aligner_config(
    vocab_size: int,
    hidden_size: int,
    max_position_embeddings: int,
    pad_token_id: int = 1,
    num_hidden_layers: int = 1,
    num_attention_heads: int = 2,
    intermediate_size: int | None = None,
) -> RobertaConfig:
    """A small RoBERTa config matching a tiny LayoutLMv3 (for tests and CPU smoke runs).

    Args:
        vocab_size: at least LayoutLMv3's vocabulary size (it reads the same input_ids).
        hidden_size: LayoutLMv3's hidden size.
        max_position_embeddings: at least LayoutLMv3's (both offset positions by pad_token_id + 1).
        pad_token_id: LayoutLMv3's pad id, so both models treat the same positions as padding.
        num_hidden_layers: transformer layers.
        num_attention_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: MLP width, 2 * hidden_size by default.

    Returns:
        A ``RobertaConfig`` with dropout off.
    """
    return RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


class ProjectionHead(nn.Module):
    """Linear projection followed by L2 normalisation (``vision_proj`` / ``text_proj`` of the spec).

    Args:
        hidden_size: input width H (the aligner's hidden size).
        embed_dim: output width, 256 in AETNet.
    """

    def __init__(self, hidden_size: int, embed_dim: int = 256):
        super().__init__()
        self.proj = nn.Linear(hidden_size, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project and normalise.

        Args:
            x: (..., H) features, e.g. (B, H) CLS vectors or (B, N, H) local features.

        Returns:
            (..., embed_dim) unit-norm features.
        """
        return F.normalize(self.proj(x), dim=-1)


def _config_of(obj: nn.Module | PretrainedConfig) -> PretrainedConfig:
    return obj if isinstance(obj, PretrainedConfig) else obj.config


def _visual_tokens(size: int | tuple | list, patch: int | tuple | list) -> int:
    """1 + number of patches for an image size and patch size given as ints or (h, w) pairs."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return 1 + (h // ph) * (w // pw)


def check_compatible(
    layoutlmv3_config: LayoutLMv3Config,
    image_aligner: ViTModel | ViTConfig | None,
    text_aligner: RobertaModel | RobertaConfig | None,
) -> None:
    """Check that the aligners' outputs can be added to this LayoutLMv3's embeddings.

    Args:
        layoutlmv3_config: the fusion model's config.
        image_aligner: the image aligner or its config; None to skip.
        text_aligner: the text aligner or its config; None to skip.

    Raises:
        AetnetError: naming the mismatch (hidden size, visual token count, vocabulary size or
            position table length) and how to fix it.
    """
    hidden = layoutlmv3_config.hidden_size
    width_fix = (
        "LayoutLMv3-large (1024-d) needs 1024-d aligners (e.g. ViT-L/16 and roberta-large) or a projection "
        "of the aligner output to the LayoutLMv3 width"
    )
    if image_aligner is not None:
        vit = _config_of(image_aligner)
        if vit.model_type == "deit":
            raise AetnetError(
                "image aligner: a DeiT model adds a distillation token (one token too many); load the "
                "checkpoint with build_image_aligner, which uses ViTModel."
            )
        if not layoutlmv3_config.visual_embed:
            raise AetnetError(
                "image aligner: the LayoutLMv3 config has visual_embed=false, so there are no visual tokens "
                "to add image features to; drop the image aligner or enable visual_embed."
            )
        if vit.hidden_size != hidden:
            raise AetnetError(
                f"image aligner: hidden_size is {vit.hidden_size} but LayoutLMv3's is {hidden}; {width_fix}."
            )
        vit_tokens = _visual_tokens(vit.image_size, vit.patch_size)
        lm_tokens = _visual_tokens(layoutlmv3_config.input_size, layoutlmv3_config.patch_size)
        if vit_tokens != lm_tokens:
            raise AetnetError(
                f"image aligner: yields {vit_tokens} tokens (image_size {vit.image_size}, patch_size "
                f"{vit.patch_size}) but LayoutLMv3 has {lm_tokens} visual tokens (input_size "
                f"{layoutlmv3_config.input_size}, patch_size {layoutlmv3_config.patch_size}); use the same "
                f"image size and patch size for both."
            )
    if text_aligner is not None:
        rob = _config_of(text_aligner)
        if rob.hidden_size != hidden:
            raise AetnetError(
                f"text aligner: hidden_size is {rob.hidden_size} but LayoutLMv3's is {hidden}; {width_fix}."
            )
        if rob.vocab_size < layoutlmv3_config.vocab_size:
            raise AetnetError(
                f"text aligner: vocab_size is {rob.vocab_size}, smaller than LayoutLMv3's "
                f"{layoutlmv3_config.vocab_size}; it reads LayoutLMv3's input_ids, so use a RoBERTa with the "
                f"same vocabulary (roberta-base for layoutlmv3-base)."
            )
        if rob.max_position_embeddings < layoutlmv3_config.max_position_embeddings:
            raise AetnetError(
                f"text aligner: max_position_embeddings is {rob.max_position_embeddings}, smaller than "
                f"LayoutLMv3's {layoutlmv3_config.max_position_embeddings}; long inputs would overflow its "
                f"position table, so use a RoBERTa with at least as many positions."
            )
        if rob.pad_token_id != layoutlmv3_config.pad_token_id:
            logger.warning(
                "text aligner pad_token_id %s differs from LayoutLMv3's %s; padding positions will differ",
                rob.pad_token_id, layoutlmv3_config.pad_token_id,
            )
