"""aetnet: Alignment-Enriched Tuning (AETNet) for LayoutLMv3 document models.

Public API::

    import aetnet
    run_dir = aetnet.finetune("funsd", demo=True, base="tiny")
    model = aetnet.load(run_dir / "model")

Nothing here downloads at import time.
"""

from aetnet.checkout import map_checkout_folders
from aetnet.errors import AetnetError, DataError  # noqa: F401
from aetnet.version import __version__  # noqa: F401

map_checkout_folders(__file__)  # run from a checkout: its tasks/ and recipes/ folders


def finetune(task: str, **kwargs):
    """Fine-tune ``task``; see :func:`aetnet.train.runner.finetune`."""
    from aetnet.train.runner import finetune as _finetune

    return _finetune(task, **kwargs)


def load(path, revision=None):
    """Load a fine-tuned or exported model folder, or a Hub id ``OWNER/NAME`` (at ``revision``; downloaded
    into the Hub cache once, read offline from there afterwards); see :func:`aetnet.inference.modelio.load_model`."""
    from aetnet.inference.modelio import load_model

    return load_model(path, revision)
