"""GPU efficiency settings of a run: precision, TF32, attention kernel, torch.compile.

Each setting defaults to the fastest choice that is exact enough for the hardware at hand, and the
run records what was used in ``metrics.json`` (``train_precision``, ``tf32``, ``attn_implementation``,
``compile``):

* ``train.bf16`` (default ``None``): bfloat16 autocast on GPUs that support it, fp32 on CPU (CPUs
  without bf16 matrix units run bf16 slower than fp32);
* ``train.tf32`` (default ``None``): TF32 matmuls and cuDNN convolutions on Ampere (compute
  capability 8.0) and newer; never on CPU;
* ``model.attn_implementation`` (default ``sdpa``): see :mod:`aetnet.models.attention`;
* ``train.compile``: ``torch.compile`` of the transformer encoders (the layer stacks) of the fusion
  LayoutLMv3 and of both aligners and their momentum copies. The encoders hold nearly all the FLOPs;
  the embeddings stay eager because the fusion hooks that add the aligner features there are new
  closures at every forward (compiling through them would recompile at every step). Compiling in
  place (``nn.Module.compile``) keeps parameter names, so checkpoints and saved models are unchanged.
* ``train.gradient_checkpointing``: activation checkpointing of the layers that train
  (:mod:`aetnet.models.checkpointing`); switched on before compiling, so the compiled encoders trace it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from aetnet.config.settings import RunConfig
from aetnet.errors import AetnetError
from aetnet.models.attention import attention_of, freeze_gradless_tables, set_attention
from aetnet.models.checkpointing import set_activation_checkpointing

logger = logging.getLogger(__name__)

__all__ = ["compile_encoders", "prepare_model", "resolve_bf16", "resolve_tf32"]


def resolve_bf16(setting: bool | None) -> bool:
    """``train.bf16`` -> whether the run uses bfloat16 autocast (``None``: GPUs that support it)."""
    if setting is not None:
        return bool(setting)
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_tf32(setting: bool | None) -> bool:
    """``train.tf32`` -> whether TF32 is used (``None``: CUDA devices of compute capability >= 8.0).

    TF32 is a GPU number format: without a CUDA device it is skipped (a GPU recipe asking for it still
    runs on CPU, with a warning), and ``metrics.json`` records ``tf32: false``.
    """
    has_cuda = torch.cuda.is_available()
    if setting is None:
        return bool(has_cuda and torch.cuda.get_device_capability()[0] >= 8)
    if setting and not has_cuda:
        logger.warning("train.tf32=true is skipped: there is no CUDA GPU (TF32 is a GPU number format)")
        return False
    return bool(setting)


def apply_tf32(enabled: bool) -> None:
    """Switch TF32 for CUDA matmuls and cuDNN convolutions (process-wide; nothing on CPU)."""
    if not torch.cuda.is_available():
        return
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9 (the older flags are deprecated)
        torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if enabled else "ieee"
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def compile_encoders(model: nn.Module, backend: str = "inductor") -> int:
    """``torch.compile`` in place every transformer encoder (layer stack) inside ``model``.

    Args:
        model: any module holding transformers models (fusion, aligners, momentum copies).
        backend: a ``torch.compile`` backend.

    Returns:
        How many encoders were compiled.

    Raises:
        AetnetError: an unknown backend.
    """
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise AetnetError(
            f"train.compile_backend={backend!r} is not a torch.compile backend; choose one of: "
            f"{', '.join(torch._dynamo.list_backends())}"
        )
    from transformers import PreTrainedModel

    encoders: dict[int, nn.Module] = {}
    for module in model.modules():
        encoder = getattr(module, "encoder", None) if isinstance(module, PreTrainedModel) else None
        if isinstance(encoder, nn.Module):
            encoders[id(encoder)] = encoder
    for encoder in encoders.values():
        encoder.compile(backend=backend)
    logger.info("torch.compile (%s): %d encoder(s)", backend, len(encoders))
    return len(encoders)


def prepare_model(model: nn.Module, cfg: RunConfig) -> dict[str, Any]:
    """Apply the run's efficiency settings to ``model`` and the process; return what was used.

    Freezes the gradient-less relative-position tables (DDP runs without looking for unused
    parameters), bounds the feature queues' rows per rank by the per-device batch size (their
    distributed gather then needs no host sync), sets the attention kernel, switches TF32, and
    checkpoints the layers' activations and compiles the encoders if asked.

    Returns:
        ``{"train_precision": "bf16"|"fp32", "tf32": bool, "attn_implementation": str, "compile": backend|"off",
        "gradient_checkpointing": bool}`` for ``metrics.json``.
    """
    from aetnet.strategies.aet.queue import FeatureQueue

    freeze_gradless_tables(model)
    for queue in (m for m in model.modules() if isinstance(m, FeatureQueue)):
        queue.rows_per_rank = cfg.train.batch_size  # distributed enqueue without a host sync per step
    set_attention(model, cfg.model.attn_implementation)
    tf32 = resolve_tf32(cfg.train.tf32)
    apply_tf32(tf32)
    if cfg.train.gradient_checkpointing:
        layers = set_activation_checkpointing(model)
        logger.info("activation checkpointing: %d layer(s)", layers)
    if cfg.train.compile:
        compile_encoders(model, cfg.train.compile_backend)
    return {
        "train_precision": "bf16" if resolve_bf16(cfg.train.bf16) else "fp32",
        "tf32": tf32,
        "attn_implementation": attention_of(model),
        "compile": cfg.train.compile_backend if cfg.train.compile else "off",
        "gradient_checkpointing": bool(cfg.train.gradient_checkpointing),
    }
