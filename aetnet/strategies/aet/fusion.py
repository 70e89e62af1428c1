"""Fusion of aligned features into an unmodified LayoutLMv3.

AETNet adds the aligners' hidden states to two intermediate activations of LayoutLMv3 (spec section 1,
"Fusion"):

* text: the OUTPUT of ``layoutlmv3.embeddings`` (word + 1-D position + 2-D layout embeddings after
  their LayerNorm and dropout), one aligner vector per text position, padding included;
* image: the OUTPUT of ``layoutlmv3.norm`` (the last step of ``forward_image``: patch embedding ->
  CLS -> position embedding -> LayerNorm), the ViT CLS onto the visual CLS and patch i onto patch i.

LayoutLMv3 then concatenates both streams and applies its model-level LayerNorm, dropout and encoder
exactly as it would without fusion. This is done with forward hooks that live for one forward call,
so no LayoutLMv3 code is copied or patched and the same checkpoint loads into the fused model.
``inputs_embeds`` is not a substitute: it adds before the embedding LayerNorm and switches LayoutLMv3
to sequential (padding-unaware) position ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import LayoutLMv3Model

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

TEXT_HOOK = "embeddings"
IMAGE_HOOK = "norm"


@dataclass
class FusionState:
    """What the hooks of one :func:`fused_features` block did, mostly for debugging and tests.

    Attributes:
        calls: how many times each registered hook fired, keyed by submodule name
            (``"embeddings"``, ``"norm"``); a side without features has no entry.
    """

    calls: dict[str, int] = field(default_factory=dict)


def find_layoutlmv3(model: nn.Module) -> LayoutLMv3Model:
    """Return the ``LayoutLMv3Model`` inside ``model``.

    Accepts the ``LayoutLMv3Model`` itself, a task model (``LayoutLMv3For*``, whose backbone is
    ``.layoutlmv3``), or any wrapper (PEFT, DDP, a composed AETNet model) that holds exactly one.

    Args:
        model: a LayoutLMv3 backbone, task model or wrapper.

    Returns:
        The backbone whose ``embeddings`` and ``norm`` the fusion hooks attach to.

    Raises:
        TypeError: when ``model`` holds no ``LayoutLMv3Model`` or more than one.
    """
    if isinstance(model, LayoutLMv3Model):
        return model
    backbone = getattr(model, "layoutlmv3", None)
    if isinstance(backbone, LayoutLMv3Model):
        return backbone
    # Wrappers (peft's PeftModel, DistributedDataParallel) hide the backbone a few levels down.
    found = [m for m in model.modules() if isinstance(m, LayoutLMv3Model)]
    if len(found) == 1:
        return found[0]
    raise TypeError(
        f"fused_features needs a LayoutLMv3Model or a model holding exactly one, got "
        f"{type(model).__name__} holding {len(found)}; pass the task model's .layoutlmv3 instead."
    )


def _check_features(name: str, features: torch.Tensor, hidden_size: int, tokens: int | None) -> None:
    """Validate the shape of features before any forward runs (the length of text is checked later)."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}.")
    if features.dim() != 3:
        raise ValueError(f"{name} must have shape (batch, tokens, hidden), got {tuple(features.shape)}.")
    if features.shape[-1] != hidden_size:
        raise ValueError(
            f"{name} have hidden size {features.shape[-1]} but LayoutLMv3 has {hidden_size}; use aligners "
            f"of the same width (1024 for large models) or project their output first."
        )
    if tokens is not None and features.shape[1] != tokens:
        raise ValueError(
            f"{name} have {features.shape[1]} tokens but LayoutLMv3 has {tokens} visual tokens "
            f"(1 CLS + patches); the image aligner must use the same image size and patch size."
        )


def _make_hook(name: str, features: torch.Tensor, state: FusionState):
    """Build a forward hook that adds ``features`` to the output of the submodule called ``name``."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        state.calls[name] += 1
        if state.calls[name] > 1:
            # Adding the same features to a second forward would silently pair them with other inputs.
            raise RuntimeError(
                f"fusion hook on layoutlmv3.{name} fired twice inside one fused_features block; "
                f"run exactly one forward per block."
            )
        if features.shape[:2] != output.shape[:2]:
            raise ValueError(
                f"features for layoutlmv3.{name} have shape {tuple(features.shape)} but its output has "
                f"shape {tuple(output.shape)}: batch size and token count must match the model inputs."
            )
        if features.device != output.device:
            raise ValueError(
                f"features for layoutlmv3.{name} are on {features.device} but the model runs on "
                f"{output.device}; move the aligner to the model's device."
            )
        # Keep the module's dtype (e.g. a bf16 model fed fp32 aligner output); .to() keeps the graph.
        return output + features.to(dtype=output.dtype)

    return hook


@contextmanager
def fused_features(
    model: nn.Module,
    text_features: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
) -> Iterator[FusionState]:
    """Add aligned features to LayoutLMv3's text and visual embeddings for exactly one forward call.

    Example::

        with fused_features(task_model, text_features=roberta_out, image_features=vit_out):
            outputs = task_model(input_ids=..., bbox=..., attention_mask=..., pixel_values=...)

    The features are added as they are (not detached), so the task loss also trains the aligners.
    All-zero features give exactly the plain LayoutLMv3 output. The hooks are removed on exit, also
    when the body raises (the body's exception is then propagated unchanged).

    Args:
        model: a ``LayoutLMv3Model``, a ``LayoutLMv3For*`` task model or a wrapper holding one.
        text_features: (B, L, H) text-aligner hidden states, L the text length passed to the model
            (``input_ids.shape[1]``), added to the output of ``layoutlmv3.embeddings``; None for none.
        image_features: (B, 1 + P, H) image-aligner output including its CLS, P the number of
            LayoutLMv3 patches ((input_size / patch_size) ** 2), added to the output of
            ``layoutlmv3.norm``; None for none.

    Yields:
        A :class:`FusionState` counting how often each hook fired.

    Raises:
        TypeError: ``model`` holds no ``LayoutLMv3Model`` or several.
        AetnetError: image features for a model built without visual embeddings (or text features
            without text embeddings).
        ValueError: features with a wrong rank, hidden size, visual token count, or (during the
            forward) a batch size or text length that does not match the inputs.
        RuntimeError: on exit, when a hook with features did not fire (e.g. text features but no
            ``input_ids``/``inputs_embeds``, or no forward at all); during the forward, when a hook
            fires a second time.
    """
    backbone = find_layoutlmv3(model)
    config = backbone.config
    hidden = config.hidden_size
    targets: list[tuple[str, nn.Module, torch.Tensor]] = []
    if text_features is not None:
        if not getattr(config, "text_embed", True) or not hasattr(backbone, "embeddings"):
            raise AetnetError(
                "text_features were given but this LayoutLMv3 has no text embeddings (config.text_embed is "
                "false); pass text_features=None or use a model with text_embed=True."
            )
        _check_features("text_features", text_features, hidden, tokens=None)
        targets.append((TEXT_HOOK, backbone.embeddings, text_features))
    if image_features is not None:
        if not getattr(config, "visual_embed", False) or not hasattr(backbone, "norm"):
            raise AetnetError(
                "image_features were given but this LayoutLMv3 has no visual embeddings (config.visual_embed "
                "is false, so layoutlmv3.norm does not exist); pass image_features=None or use a model with "
                "visual_embed=True."
            )
        visual_tokens = backbone.pos_embed.shape[1]
        _check_features("image_features", image_features, hidden, tokens=visual_tokens)
        targets.append((IMAGE_HOOK, backbone.norm, image_features))

    state = FusionState(calls={name: 0 for name, _, _ in targets})
    handles = []
    try:
        for name, module, features in targets:
            handles.append(module.register_forward_hook(_make_hook(name, features, state)))
        yield state
    except BaseException:
        # The body failed: let its exception through untouched; finally still removes the hooks.
        raise
    else:
        wrong = {name: n for name, n in state.calls.items() if n != 1}
        if wrong:
            detail = ", ".join(f"layoutlmv3.{name} fired {n} times" for name, n in wrong.items())
            raise RuntimeError(
                f"fused_features expected each fusion hook to fire exactly once, but {detail}; call the "
                f"model exactly once inside the block, with input_ids (or inputs_embeds) when text features "
                f"are given and pixel_values when image features are given."
            )
    finally:
        for handle in handles:
            handle.remove()
