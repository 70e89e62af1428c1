"""Settings of the ``prompt`` strategy (section ``prompt:`` of recipes, ``prompt.x=...`` overrides). Kept apart from
the strategy's code (torch) so that reading a configuration stays light."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PromptSettings:
    """Prompt tuning (strategy ``prompt``)."""

    num_prompts: int = 20
    """Learned prompt vectors inserted after ``<s>``; ``data.max_length`` plus this must fit the base's positions."""
