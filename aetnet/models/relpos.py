"""Fine-tuning LayoutLMv3's relative-position bias tables, as the original LayoutLMv3 and AET code did.

transformers 5.x reads the 1D and 2D relative-position bias tables (``rel_pos_bias``,
``rel_pos_x_bias``, ``rel_pos_y_bias``, one ``(bins -> heads)`` linear map each) inside
``torch.no_grad`` (``LayoutLMv3Encoder._relative_position_lookup``), so they never receive a gradient
and keep their pre-trained values in every fine-tuning run. The original code computed the bias as
``one_hot(bucket) @ W`` with gradient, so they were fine-tuned. :func:`train_relative_position_biases`
(option ``model.train_relative_position_bias``) gives an encoder a lookup that keeps the gradient; the
values it produces are the stock lookup's, and saved models load and predict with stock transformers.
"""

from __future__ import annotations

import logging
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

TABLES = ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias")
#: Set on an encoder whose tables train (so nothing freezes them again).
TRAINABLE_FLAG = "_aetnet_trains_relative_position_bias"


def _lookup_with_grad(encoder: nn.Module, positions: Tensor, bias: nn.Linear, num_buckets: int,
                      max_distance: int) -> Tensor:
    """Bias of every (query, key) pair, differentiable in ``bias.weight``.

    Args:
        encoder: the ``LayoutLMv3Encoder`` (its ``relative_position_bucket`` gives the bucketing).
        positions: (B, L) 1D positions or one box coordinate per token.
        bias: the table, a ``Linear(num_buckets, heads)`` whose weight is (heads, num_buckets).
        num_buckets, max_distance: the table's bucketing.

    Returns:
        (B, heads, L, L): ``[b, h, i, j] = W[h, bucket(positions[b, j] - positions[b, i])]``.
    """
    # Buckets are constant beyond max_distance: bucket the 2 * max_distance + 1 clamped offsets once.
    offsets = torch.arange(-max_distance, max_distance + 1, device=positions.device)
    bucket_of = encoder.relative_position_bucket(offsets, num_buckets=num_buckets, max_distance=max_distance)
    positions = positions.long()
    relative = (positions[:, None, :] - positions[:, :, None]).clamp(-max_distance, max_distance)
    buckets = bucket_of[relative + max_distance]  # (B, L, L)
    return F.embedding(buckets, bias.weight.t()).permute(0, 3, 1, 2)


def _encoder_of(model: nn.Module) -> nn.Module:
    base = getattr(model, "layoutlmv3", model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "relative_position_bucket") \
            or not hasattr(encoder, "_relative_position_lookup"):
        raise AetnetError(
            "model.train_relative_position_bias=true: this transformers version's LayoutLMv3 encoder has no "
            "_relative_position_lookup to replace; set it to false or use transformers 5.x"
        )
    return encoder


def train_relative_position_biases(model: nn.Module) -> list[str]:
    """Make a LayoutLMv3 model's relative-position bias tables trainable (in place).

    Args:
        model: ``LayoutLMv3Model`` or a ``LayoutLMv3For...`` task model.

    Returns:
        The names of the tables made trainable (none when the config disables the biases).
    """
    encoder = _encoder_of(model)
    encoder._relative_position_lookup = types.MethodType(_lookup_with_grad, encoder)
    setattr(encoder, TRAINABLE_FLAG, True)
    names = [name for name in TABLES if isinstance(getattr(encoder, name, None), nn.Module)]
    for name in names:
        getattr(encoder, name).requires_grad_(True)
    logger.info("relative-position bias tables train: %s", ", ".join(names) or "none in this config")
    return names


def is_table(name: str) -> bool:
    """Whether a parameter or state-dict name belongs to a relative-position bias table."""
    return any(f".{table}." in f".{name}" for table in TABLES)


def trains_relative_position_biases(encoder: nn.Module | None) -> bool:
    """Whether :func:`train_relative_position_biases` was applied to ``encoder``."""
    return bool(getattr(encoder, TRAINABLE_FLAG, False))


def check_tables_train(model: nn.Module, strategy: str) -> None:
    """Fail when ``model.train_relative_position_bias`` is set but the strategy froze the tables.

    Raises:
        AetnetError: no relative-position bias parameter of ``model`` requires a gradient.
    """
    if not any(p.requires_grad for name, p in model.named_parameters() if is_table(name)):
        raise AetnetError(
            f"model.train_relative_position_bias=true does nothing with strategy {strategy} (its LayoutLMv3 "
            "backbone is frozen); use it with full or aet, or set it to false"
        )
