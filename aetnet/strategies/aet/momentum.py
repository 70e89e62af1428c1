"""Momentum (EMA) copies of the aligners and projection heads.

AETNet keeps an exponential moving average of each online module (both aligners and both projection
heads) and updates it once per optimizer step::

    theta_m <- m * theta_m + (1 - m) * theta        (m = 0.995 by default)

which is exactly ``lerp(theta_m, theta, 1 - m)``. The update is ONE fused
``torch._foreach_lerp_`` over all tracked tensors, not a Python loop launching one kernel per
parameter (a pitfall of the released code).

Buffers: only parameters are averaged. The aligners (ViT, RoBERTa, linear heads) hold no floating
buffer that changes during training, and a momentum copy with running statistics (BatchNorm) computes
them from its own forward passes, as in MoCo. :class:`MomentumPairs` can instead copy floating
buffers verbatim at each update (``copy_buffers=True``) for modules whose buffers should mirror the
online model exactly.

Tracking by name: :func:`momentum_param_pairs` matches parameters by their qualified name, so with
LoRA or prompt tuning only the trainable parameters need be averaged (``trainable_only=True``); frozen
parameters are identical in both copies from the start and stay so.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["MomentumPairs", "ema_update_", "make_momentum_copy", "momentum_param_pairs"]

_HAS_FOREACH_LERP = hasattr(torch, "_foreach_lerp_")


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """Return a frozen deep copy of ``module`` to serve as its momentum (EMA) twin.

    The copy has ``requires_grad=False`` on every parameter and no ``.grad``. Its train/eval flag is
    the one ``module`` has now; once the copy is registered as a submodule of the model, the model's
    ``.train()`` / ``.eval()`` set it, so dropout in the momentum encoders follows the online ones (the
    released code's momentum text features differ from the online ones through dropout).

    Args:
        module: the online module (aligner or projection head).

    Returns:
        The momentum copy, with the same structure, parameter names, dtypes and devices.
    """
    twin = copy.deepcopy(module)
    for param in twin.parameters():
        param.requires_grad_(False)
        param.grad = None
    return twin


def momentum_param_pairs(
    online: nn.Module, momentum: nn.Module, trainable_only: bool = False
) -> tuple[list[Tensor], list[Tensor]]:
    """Match the floating-point parameters of ``online`` and ``momentum`` by qualified name.

    Args:
        online: the online module.
        momentum: its momentum copy (same parameter names and shapes).
        trainable_only: keep only the parameters that require grad in ``online`` (with LoRA this is
            the adapters and heads; frozen weights never diverge, so averaging them is wasted work).

    Returns:
        ``(online_params, momentum_params)``: two equally long lists, element ``i`` of each holding
        the same parameter name, in ``online.named_parameters()`` order. Non-floating parameters are
        skipped.

    Raises:
        ValueError: a parameter of ``online`` is missing from ``momentum``, or the two differ in shape
            or dtype (the copy was not made with :func:`make_momentum_copy`, or the online model was
            changed after the copy, e.g. LoRA injected afterwards).
    """
    momentum_by_name = dict(momentum.named_parameters())
    online_list: list[Tensor] = []
    momentum_list: list[Tensor] = []
    for name, param in online.named_parameters():
        if not param.is_floating_point() or (trainable_only and not param.requires_grad):
            continue
        twin = momentum_by_name.get(name)
        if twin is None:
            raise ValueError(
                f"parameter '{name}' of the online module has no counterpart in the momentum copy; "
                "create the momentum copy after every change to the online module (e.g. after LoRA injection)"
            )
        if twin.shape != param.shape or twin.dtype != param.dtype:
            raise ValueError(
                f"parameter '{name}' differs between online ({tuple(param.shape)}, {param.dtype}) and "
                f"momentum ({tuple(twin.shape)}, {twin.dtype}) modules; recreate the momentum copy"
            )
        online_list.append(param)
        momentum_list.append(twin)
    return online_list, momentum_list


def _check_lists(online_params: Sequence[Tensor], momentum_params: Sequence[Tensor]) -> None:
    if len(online_params) != len(momentum_params):
        raise ValueError(
            f"EMA update got {len(online_params)} online tensors but {len(momentum_params)} momentum "
            "tensors; the two lists must pair up one to one"
        )
    for i, (src, dst) in enumerate(zip(online_params, momentum_params)):
        if not (src.is_floating_point() and dst.is_floating_point()):
            raise ValueError(f"EMA update tensor {i} is not floating point ({src.dtype}, {dst.dtype})")
        if src.shape != dst.shape:
            raise ValueError(
                f"EMA update tensor {i} has shape {tuple(src.shape)} online but {tuple(dst.shape)} "
                "momentum; the lists must pair tensors of equal shape"
            )
        if src.dtype != dst.dtype or src.device != dst.device:
            raise ValueError(
                f"EMA update tensor {i} is {src.dtype} on {src.device} online but {dst.dtype} on "
                f"{dst.device} momentum; move both models to the same dtype and device"
            )


@torch.no_grad()
def ema_update_(
    online_params: Sequence[Tensor], momentum_params: Sequence[Tensor], m: float, check: bool = True
) -> None:
    """In place: ``momentum <- m * momentum + (1 - m) * online`` for every pair of tensors.

    Args:
        online_params: N floating tensors (any shapes).
        momentum_params: N floating tensors, element ``i`` shaped like ``online_params[i]``; updated
            in place.
        m: momentum coefficient in [0, 1]; 0 copies the online values, 1 leaves the copy unchanged.
        check: validate lengths, shapes, dtypes and devices first (skip only when the caller already
            validated the same lists).

    Raises:
        ValueError: ``m`` outside [0, 1] or the lists do not pair up.
    """
    m = float(m)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum coefficient m must lie in [0, 1], got {m}")
    if check:
        _check_lists(online_params, momentum_params)
    if not momentum_params:
        return
    weight = 1.0 - m
    # lerp(a, b, w) = a + w * (b - a): the same formula with one multiply, exact at w = 0 and w = 1.
    if _HAS_FOREACH_LERP:
        torch._foreach_lerp_(list(momentum_params), list(online_params), weight)
    else:  # pragma: no cover - only on torch builds without the fused kernel
        for dst, src in zip(momentum_params, online_params):
            dst.lerp_(src, weight)


def _floating_buffer_pairs(online: nn.Module, momentum: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    momentum_by_name = dict(momentum.named_buffers())
    src_list, dst_list = [], []
    for name, buf in online.named_buffers():
        twin = momentum_by_name.get(name)
        if buf.is_floating_point() and twin is not None and twin.shape == buf.shape:
            src_list.append(buf)
            dst_list.append(twin)
    return src_list, dst_list


class MomentumPairs:
    """The online modules and their momentum copies, updated together in one fused call.

    This is a plain object, not an ``nn.Module``: the modules it refers to are registered on the model
    already, and registering them twice would duplicate them in ``state_dict``.

    The parameter lists are rebuilt by name on every :meth:`update` (a dictionary walk over a few
    hundred names, negligible next to a forward pass) so that moving the model (``.to()``) or a
    wrapper replacing parameter objects can never leave the EMA writing into stale tensors.

    Args:
        pairs: ``(online, momentum)`` module pairs, e.g. ``[(vit, vit_m), (vision_proj, vision_proj_m)]``.
        trainable_only: average only the parameters that require grad in the online module.
        copy_buffers: also copy floating buffers of the online modules into the momentum copies
            (verbatim, not averaged) at each update. Off by default: see the module docstring.

    Example:
        >>> vit_m = make_momentum_copy(vit)
        >>> ema = MomentumPairs([(vit, vit_m)])
        >>> ema.update(0.995)  # once per optimizer step, never during evaluation
    """

    def __init__(
        self,
        pairs: Iterable[tuple[nn.Module, nn.Module]],
        trainable_only: bool = False,
        copy_buffers: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        self.trainable_only = trainable_only
        self.copy_buffers = copy_buffers
        for online, momentum in self.pairs:
            if online is momentum:
                raise ValueError("an online module was paired with itself; pass its momentum copy")
        self.tensors()  # fail at construction, not at the first optimizer step

    def tensors(self) -> tuple[list[Tensor], list[Tensor]]:
        """The matched ``(online, momentum)`` parameter lists of all pairs, concatenated."""
        online_all: list[Tensor] = []
        momentum_all: list[Tensor] = []
        for online, momentum in self.pairs:
            src, dst = momentum_param_pairs(online, momentum, self.trainable_only)
            online_all += src
            momentum_all += dst
        return online_all, momentum_all

    @torch.no_grad()
    def update(self, m: float) -> None:
        """Apply one EMA step with coefficient ``m`` to every tracked parameter (one fused call)."""
        online, momentum = self.tensors()
        # Pairing by name already guaranteed equal shapes and dtypes; devices are checked here.
        if any(a.device != b.device for a, b in zip(online, momentum)):
            _check_lists(online, momentum)
        ema_update_(online, momentum, m, check=False)
        if self.copy_buffers:
            for src_mod, dst_mod in self.pairs:
                src, dst = _floating_buffer_pairs(src_mod, dst_mod)
                for dst_buf, src_buf in zip(dst, src):
                    dst_buf.copy_(src_buf)

    @torch.no_grad()
    def reset(self) -> None:
        """Copy the online parameters into the momentum copies exactly (an EMA step with ``m = 0``)."""
        self.update(0.0)

    def num_tensors(self) -> int:
        """How many parameter tensors one update touches."""
        return len(self.tensors()[0])
