"""Settings of the ``lora`` strategy (section ``lora:`` of recipes, ``lora.x=...`` overrides); ``aet-lora`` reads
them too. Kept apart from the strategy's code (peft, torch) so that reading a configuration stays light."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraSettings:
    """LoRA through peft (strategies ``lora`` and ``aet-lora``)."""

    r: int = 8
    """Rank of each low-rank adapter (the A and B matrices are r x in and out x r)."""
    alpha: int = 16
    """LoRA scaling numerator: an adapter's update is multiplied by ``alpha / r``."""
    dropout: float = 0.1
    """Dropout on an adapter's input, in [0, 1)."""
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    """Layer names (last part of the module name) that get adapters, in the LayoutLMv3 backbone (``aet-lora``: in the
    aligners too); for example ``query,value`` or ``query,key,value,dense``."""
