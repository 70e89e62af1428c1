"""Tuning strategies: the table that registers the built-in ones.

Each strategy is registered here once: its name (``strategy:`` in recipes, ``--strategy``), its class (as
``"module:Class"``, imported when a run asks for the strategy) and the settings sections it reads (section name =
dataclass; the section is a top-level key of recipes and ``config.yaml`` and the prefix of ``key=value``
overrides). Adding a strategy is its module or folder (code, and settings in a module that imports no torch) plus
one line below. Reading a configuration imports only the settings modules.
"""

from aetnet.registry import STRATEGIES
from aetnet.strategies.aet.config import AETConfig
from aetnet.strategies.lora.config import LoraSettings
from aetnet.strategies.prompt.config import PromptSettings

STRATEGIES.add("full", "aetnet.strategies.base:FullStrategy")
STRATEGIES.add("head", "aetnet.strategies.base:HeadStrategy")
STRATEGIES.add("aet", "aetnet.strategies.aet.strategy:AETStrategy", aet=AETConfig)
STRATEGIES.add("lora", "aetnet.strategies.lora.strategy:LoraStrategy", lora=LoraSettings)
STRATEGIES.add("aet-lora", "aetnet.strategies.aet_lora:AETLoraStrategy", aet=AETConfig, lora=LoraSettings)
STRATEGIES.add("prompt", "aetnet.strategies.prompt.strategy:PromptStrategy", prompt=PromptSettings)
