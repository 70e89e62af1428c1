"""A toy tuning strategy in one file, for tests/test_toy_strategy.py: what adding a strategy takes.

BitFit-like: the task head trains, and in the LayoutLMv3 backbone only the parameters whose names end with one of
``toy.suffixes`` (biases by default); the rest is frozen. Its settings section ``toy:`` works in recipes, as
``toy.suffixes=...`` overrides and in ``config.yaml``, with nothing else edited: the last line registers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aetnet.registry import STRATEGIES
from aetnet.strategies.base import Strategy


@dataclass
class ToySettings:
    """The toy strategy (``toy``): which backbone parameters train."""

    suffixes: list[str] = field(default_factory=lambda: ["bias"])
    """Endings of the backbone parameter names that train (the task head always trains)."""


class ToyStrategy(Strategy):
    """Head plus the backbone parameters named by ``toy.suffixes``."""

    name = "toy"

    def build(self, task, cfg, paths, labels, processor):
        model = super().build(task, cfg, paths, labels, processor)
        for name, param in model.named_parameters():
            param.requires_grad = not name.startswith("layoutlmv3.") or name.endswith(tuple(cfg.toy.suffixes))
        return model


STRATEGIES.add("toy", ToyStrategy, toy=ToySettings)
