"""Which attention kernel every transformer of a model runs, and which of its tables may train.

``model.attn_implementation`` chooses, for the fusion LayoutLMv3 and both aligners (ViT, RoBERTa)
and their momentum copies alike:

* ``sdpa`` (default): ``torch.nn.functional.scaled_dot_product_attention``, which transformers
  supports for all three (for LayoutLMv3 its 1-D/2-D relative position biases are passed as the
  additive mask). Exact up to floating-point rounding: a test checks the logits against ``eager``.
  aetnet registers it under its own name (:data:`SYNC_FREE_SDPA`) with one change to the stock
  mask: transformers checks ``padding_mask.all()`` on every forward to drop an all-ones mask,
  a host-device synchronisation that stalls the GPU queue at every LayoutLMv3 and RoBERTa forward.
  The sync-free variant always passes the (boolean) padding mask; the attention itself is
  transformers' own SDPA code. The price: a RoBERTa batch without padding no longer drops its mask,
  so PyTorch picks its memory-efficient kernel instead of the flash kernel there (LayoutLMv3 always
  has a mask, its position biases; the ViT never has one).
* ``eager``: transformers' reference matmul-softmax-matmul path (slower, more memory, and the stock
  mask code with its host sync); for comparisons and debugging.

FlexAttention and the flash-attention packages are not offered: flash kernels take no additive
bias, so they cannot run LayoutLMv3's position biases, and FlexAttention is fast only compiled.

:func:`freeze_gradless_tables` freezes LayoutLMv3's relative-position bias tables, which
transformers reads under ``torch.no_grad`` (they never receive a gradient), so that DDP can run with
``find_unused_parameters=False`` for every strategy.
"""

from __future__ import annotations

import logging
import weakref

import torch
from torch import Tensor, nn

from aetnet.errors import AetnetError
from aetnet.models.relpos import trains_relative_position_biases

logger = logging.getLogger(__name__)

__all__ = ["ATTN_CHOICES", "SYNC_FREE_SDPA", "attention_of", "freeze_gradless_tables", "set_attention"]

#: What ``model.attn_implementation`` accepts.
ATTN_CHOICES = ("sdpa", "eager")
#: The name transformers knows aetnet's synchronisation-free SDPA by.
SYNC_FREE_SDPA = "aetnet_sdpa"
_REGISTERED = False
_REL_POS_TABLES = ("rel_pos_bias", "rel_pos_x_bias", "rel_pos_y_bias")


def _sync_free_sdpa_mask(*args, **kwargs):
    """transformers' SDPA mask, never dropped for an all-ones padding mask (no ``.all()`` host sync)."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


class _BiasMaskCache:
    """The last position-bias mask built, reused while the same bias and padding mask come back.

    LayoutLMv3 passes the same ``position_bias`` (B, heads, L, L) and padding mask to every layer;
    transformers' SDPA path merges them into one additive mask in every layer (a ``torch.where`` over
    B x heads x L x L, then a cast to bf16 under autocast). Built once per forward instead, in the
    query's dtype, it saves that memory traffic in 11 of 12 layers. The entry is dropped as soon as
    the bias it was built from is freed (a weak reference), so it never outlives the forward's graph.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.mask: Tensor | None = None

    def clear(self) -> None:
        self.key, self.mask = None, None

    def _drop(self, ref: weakref.ref) -> None:
        if self.key is not None and self.key[0] is ref:  # only the entry built from the freed bias
            self.clear()

    def get(self, position_bias: Tensor, attention_mask: Tensor | None, query: Tensor, key: Tensor) -> Tensor:
        from transformers.integrations import sdpa_attention

        if self.key is not None:
            bias_ref, mask_ref, dtype = self.key
            if bias_ref() is position_bias and (mask_ref() if mask_ref else None) is attention_mask \
                    and dtype == query.dtype:
                return self.mask
        mask = sdpa_attention.create_position_bias_mask(position_bias, attention_mask, False, query, key)
        mask = mask.to(query.dtype)
        self.key = (weakref.ref(position_bias, self._drop),
                    weakref.ref(attention_mask) if attention_mask is not None else None, query.dtype)
        self.mask = mask
        return mask


_BIAS_MASKS = _BiasMaskCache()


def _sync_free_sdpa_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                              attention_mask: Tensor | None, position_bias: Tensor | None = None, **kwargs):
    """transformers' SDPA attention, with LayoutLMv3's bias mask built once per forward (not per layer)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # Under torch.compile the graph compiler merges the per-layer work itself: keep the stock path.
    if position_bias is not None and not getattr(module, "is_causal", False) and not torch.compiler.is_compiling():
        attention_mask = _BIAS_MASKS.get(position_bias, attention_mask, query, key)
        position_bias = None
    return sdpa_attention_forward(module, query, key, value, attention_mask, position_bias=position_bias, **kwargs)


def _register() -> None:
    """Register :data:`SYNC_FREE_SDPA` with transformers' attention and mask interfaces (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SYNC_FREE_SDPA, _sync_free_sdpa_attention)
    AttentionMaskInterface.register(SYNC_FREE_SDPA, _sync_free_sdpa_mask)
    _REGISTERED = True


def _pretrained_models(model: nn.Module) -> list[nn.Module]:
    from transformers import PreTrainedModel

    return [m for m in model.modules() if isinstance(m, PreTrainedModel)]


def set_attention(model: nn.Module, implementation: str) -> int:
    """Make every transformers model inside ``model`` run ``implementation``.

    Works through wrappers (AETNet, peft, prompt tuning): each ``PreTrainedModel`` found among the
    submodules (fusion, aligners, momentum copies) gets the implementation in its config, which its
    attention layers read at every forward. Nothing is saved: ``config.json`` never stores it.

    Args:
        model: any module holding transformers models.
        implementation: one of :data:`ATTN_CHOICES`.

    Returns:
        How many transformers models (distinct configs) were set.

    Raises:
        AetnetError: an unknown implementation.
    """
    if implementation not in ATTN_CHOICES:
        raise AetnetError(
            f"model.attn_implementation={implementation!r} is not valid; choose one of: {', '.join(ATTN_CHOICES)}"
        )
    name = implementation
    if implementation == "sdpa":
        _register()
        name = SYNC_FREE_SDPA
    configs = {id(m.config): m.config for m in _pretrained_models(model)}  # a head and its backbone share one
    for config in configs.values():
        config._attn_implementation = name
    logger.info("attention: %s in %d transformers model(s)", implementation, len(configs))
    return len(configs)


def attention_of(model: nn.Module) -> str:
    """The attention implementation the transformers models in ``model`` run (``sdpa``, ``eager``,
    or several names joined by ``+`` when they differ)."""
    names = sorted({str(m.config._attn_implementation) for m in _pretrained_models(model)})
    return "+".join("sdpa" if n == SYNC_FREE_SDPA else n for n in names)


def freeze_gradless_tables(model: nn.Module) -> int:
    """Freeze LayoutLMv3's relative-position bias tables wherever ``model`` holds them.

    transformers looks them up under ``torch.no_grad`` (fixed tables it never trains), so they never
    receive a gradient; left trainable, DDP with ``find_unused_parameters=False`` stops at the second
    step waiting for their gradients. Freezing changes nothing else: the optimizer skips a parameter
    without gradient either way. Encoders given a differentiable lookup by
    :func:`aetnet.models.relpos.train_relative_position_biases` are left alone.

    Returns:
        How many tables were frozen.
    """
    frozen = 0
    for module in model.modules():
        if trains_relative_position_biases(module):  # model.train_relative_position_bias: they get gradients
            continue
        for name in _REL_POS_TABLES:
            table = getattr(module, name, None)
            if isinstance(table, nn.Module) and any(p.requires_grad for p in table.parameters()):
                table.requires_grad_(False)
                frozen += 1
    return frozen
