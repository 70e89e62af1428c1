"""Activation (gradient) checkpointing of the transformer layers that train (``train.gradient_checkpointing``).

Each checkpointed layer keeps only its input during the forward pass and recomputes its inner
activations (attention scores, the 3072-wide MLP, dropout masks, ...) during the backward pass: the
activation memory of an encoder falls from about one layer's worth of intermediates per layer to one
hidden state per layer, for about one extra forward pass of compute.

What is checkpointed: every transformers layer block (``GradientCheckpointingLayer``: LayoutLMv3's,
the ViT's and RoBERTa's layers) of the fusion LayoutLMv3 and of both online aligners, whatever wraps
them (peft LoRA, prompt tuning, a relation head). The momentum copies of AET (inside the
``alignment`` part) are left alone: they run under ``torch.no_grad`` and keep no activations.

How: PyTorch's non-reentrant ``torch.utils.checkpoint.checkpoint`` (``use_reentrant=False``), which

* restores the random-number state for the recomputation, so dropout draws the same masks and a
  step's losses and gradients equal those without checkpointing;
* needs no input that requires a gradient (a frozen backbone under LoRA or prompt tuning works
  without ``enable_input_require_grads``);
* works under DDP without ``find_unused_parameters`` or a static graph, and under ``torch.compile``.

transformers' own ``gradient_checkpointing_enable`` is not used: LayoutLMv3's classes do not declare
``supports_gradient_checkpointing`` (so it refuses), and it cannot tell the momentum copies apart.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from aetnet.errors import AetnetError

__all__ = ["checkpointed_layers", "runs_without_gradients", "set_activation_checkpointing"]

#: Module types whose layers run under ``torch.no_grad`` (AET's momentum copies): never checkpointed.
_NO_GRAD_CONTAINERS: list[type[nn.Module]] = []


def runs_without_gradients(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: the layers inside modules of this type keep no activations; leave them alone."""
    _NO_GRAD_CONTAINERS.append(cls)
    return cls

_CHECKPOINT = functools.partial(checkpoint, use_reentrant=False)


def _online_layers(model: nn.Module) -> list[GradientCheckpointingLayer]:
    """Every transformers layer block of ``model`` outside AET's momentum copies, in module order."""
    skip = tuple(_NO_GRAD_CONTAINERS)
    momentum = {id(m) for heads in model.modules() if isinstance(heads, skip) for m in heads.modules()}
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and id(m) not in momentum]


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation checkpointing on (or off) for every trainable-path layer of ``model``.

    Args:
        model: a task model of any strategy (a ``LayoutLMv3For...``, :class:`AETNetModel`, a peft or
            prompt-tuning wrapper) or any module holding transformers layers.
        enabled: ``True`` checkpoints the layers, ``False`` restores the plain forward.

    Returns:
        How many layers were switched (LayoutLMv3's plus both aligners' for AET).

    Raises:
        AetnetError: ``enabled`` and ``model`` holds no transformers layer block to checkpoint.
    """
    layers = _online_layers(model)
    if enabled and not layers:
        raise AetnetError(f"train.gradient_checkpointing=true: {type(model).__name__} has no transformer layer "
                          "to checkpoint; set train.gradient_checkpointing=false")
    for layer in layers:
        layer.gradient_checkpointing = bool(enabled)
        layer._gradient_checkpointing_func = _CHECKPOINT
    return len(layers)


def checkpointed_layers(model: nn.Module) -> int:
    """How many layer blocks of ``model`` (momentum copies included) run checkpointed in training."""
    return sum(1 for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing)
