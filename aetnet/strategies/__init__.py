"""Tuning strategies; importing this package registers the built-in ones."""

from aetnet.strategies import (  # noqa: F401
    aet,  # noqa: F401
    aet_lora,  # noqa: F401
    lora,
    prompt,
)
