"""Helpers several test modules share (imported as ``from tests.helpers import ...``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def one_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """One Adam step (lr 1e-2) of ``model`` on ``batch``, over its trainable parameters."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch)["loss"].backward()
    opt.step()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every named parameter."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def page_record(image: str, /, **fields: Any) -> dict[str, Any]:
    """A three-word labelled pages.jsonl record on the page image ``image``; ``fields`` replace its fields, and a
    field given as ``None`` is left out."""
    base = {"id": "p1", "image": image, "words": ["Total:", "12.00", "EUR"],
            "boxes": [[10, 10, 50, 20], [60, 10, 90, 20], [95, 10, 120, 20]], "labels": ["KEY", "VALUE", "VALUE"]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}
