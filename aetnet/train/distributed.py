"""Data preparation once per node under ``torchrun`` / ``accelerate launch``.

Every process of a distributed run needs the same documents and windows. Preparing them means OCR
(hours at benchmark scale) and tokenisation; done by every rank, each page would be recognised once
per rank, with ranks racing on the same cache files. :func:`local_main_first` lets the main process
of each node prepare the data (filling the OCR cache, and any other on-disk cache) while the other
processes of the node wait; they then prepare it themselves, which now only reads the caches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta

import torch

logger = logging.getLogger(__name__)

#: The process group's timeout, as the Hugging Face Trainer sets it (``ddp_timeout``).
PROCESS_GROUP_TIMEOUT = timedelta(seconds=1800)
#: How long waiting processes wait for the data: OCR of a large dataset can take many hours.
DATA_WAIT_TIMEOUT = timedelta(days=7)


def world_size() -> int:
    """The number of processes of the launch (1 outside torchrun/accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _ensure_process_group() -> None:
    """Start the default process group as the Trainer would (it then reuses it)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)


@contextlib.contextmanager
def local_main_first(desc: str = "data preparation") -> Iterator[None]:
    """Run the block in the main process of each node first; the node's other processes wait, then run it.

    The wait uses its own gloo group with a long timeout (:data:`DATA_WAIT_TIMEOUT`), so a long OCR
    pass does not trip the training process group's timeout. If the main process fails, it still
    releases the others, which then meet the same error themselves. Outside a distributed launch
    the block simply runs.
    """
    if world_size() <= 1:
        yield
        return
    import torch.distributed as dist

    _ensure_process_group()
    group = dist.new_group(backend="gloo", timeout=DATA_WAIT_TIMEOUT)
    local_main = int(os.environ.get("LOCAL_RANK", "0")) == 0
    try:
        if not local_main:
            logger.info("rank %d waits for the main process of its node to finish %s", dist.get_rank(), desc)
            dist.barrier(group=group)
        try:
            yield
        finally:
            if local_main:
                dist.barrier(group=group)
    finally:
        dist.destroy_process_group(group)
