"""The demo cache: each task's synthetic dataset generated once into ``<cache>/demo/<task>-v1``."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

from aetnet.data.demo.forms import make_funsd_demo
from aetnet.data.demo.pages import make_rvl_cdip_demo
from aetnet.data.demo.questions import make_docvqa_demo
from aetnet.data.demo.receipts import make_cord_demo
from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

DEMO_VERSION = "v1"
#: ``funsd-re`` uses the same synthetic forms (every question linked to its answer), five times as
#: many: a pair scorer on a tiny random model needs more pages than word labelling to generalise.
_GENERATORS = {"funsd": make_funsd_demo, "cord": make_cord_demo,
               "rvl-cdip": make_rvl_cdip_demo, "docvqa": make_docvqa_demo,
               "funsd-re": functools.partial(make_funsd_demo, n_train=120, n_test=24)}


def demo_cache_dir(task: str, cache_root: Path | None = None) -> Path:
    """Folder where :func:`ensure_demo` keeps ``task``.

    Args:
        task: canonical task name (``"funsd"``, ``"funsd-re"``, ``"cord"``, ``"rvl-cdip"``, ``"docvqa"``).
        cache_root: cache root; defaults to ``$AETNET_CACHE``, else ``~/.cache/aetnet``.

    Returns:
        ``<cache_root>/demo/<task>-v1``.
    """
    if cache_root is None:
        env = os.environ.get("AETNET_CACHE")
        cache_root = Path(env) if env else Path.home() / ".cache" / "aetnet"
    return Path(cache_root).expanduser() / "demo" / f"{task}-{DEMO_VERSION}"


def ensure_demo(task: str, cache_root: Path | None = None) -> Path:
    """Generates the demo dataset of ``task`` once and returns its folder.

    The data is written to a temporary sibling folder and renamed into place, so a folder that
    exists is complete; concurrent callers (e.g. several ``torchrun`` ranks) all end up with the
    same folder. A second call returns the existing folder untouched.

    Args:
        task: ``"funsd"``, ``"funsd-re"``, ``"cord"``, ``"rvl-cdip"`` (or ``"rvl_cdip"``) or ``"docvqa"``.
        cache_root: cache root; defaults to ``$AETNET_CACHE``, else ``~/.cache/aetnet``.

    Returns:
        The dataset folder, in the task's original release layout.

    Raises:
        AetnetError: for an unknown task.
    """
    key = task.replace("_", "-").lower()
    if key not in _GENERATORS:
        raise AetnetError(
            f"no demo dataset for task '{task}'; choose one of {', '.join(sorted(_GENERATORS))}"
        )
    final = demo_cache_dir(key, cache_root)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        _GENERATORS[key](tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another process: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("demo dataset for %s ready at %s", key, final)
    return final
