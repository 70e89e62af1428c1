"""Tuning strategies; importing this package registers the built-in ones.

Each strategy is registered here once: its name (``strategy:`` in recipes, ``--strategy``), its class and the
settings sections it reads (section name = dataclass; the section is a top-level key of recipes and ``config.yaml``
and the prefix of ``key=value`` overrides). Adding a strategy is its module (or folder) plus one line below.
"""

from aetnet.registry import STRATEGIES
from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.aet.strategy import AETStrategy
from aetnet.strategies.aet_lora import AETLoraStrategy
from aetnet.strategies.base import BasePaths, FullStrategy, HeadStrategy, Strategy, count_parameters
from aetnet.strategies.lora import LoraSettings, LoraStrategy
from aetnet.strategies.prompt import PromptSettings, PromptStrategy

STRATEGIES.add("full", FullStrategy)
STRATEGIES.add("head", HeadStrategy)
STRATEGIES.add("aet", AETStrategy, aet=AETConfig)
STRATEGIES.add("lora", LoraStrategy, lora=LoraSettings)
STRATEGIES.add("aet-lora", AETLoraStrategy, aet=AETConfig, lora=LoraSettings)
STRATEGIES.add("prompt", PromptStrategy, prompt=PromptSettings)

__all__ = ["BasePaths", "Strategy", "count_parameters"]
