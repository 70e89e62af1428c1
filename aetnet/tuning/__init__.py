"""Tuning strategies; importing this package registers the built-in ones."""

from aetnet.tuning.base import BasePaths, Strategy, count_parameters  # noqa: F401
from aetnet.tuning import aet  # noqa: F401
from aetnet.tuning import lora, prompt  # noqa: F401
from aetnet.tuning import aet_lora  # noqa: F401
