"""Data preparation once per node under ``torchrun`` / ``accelerate launch``.

Every process of a distributed run needs the same documents and windows. Preparing them means OCR
(hours at benchmark scale) and tokenisation; done by every rank, each page would be recognised once
per rank, with ranks racing on the same cache files. :func:`local_main_first` lets the main process
of each node prepare the data (filling the OCR cache, and any other on-disk cache) while the other
processes of the node wait. The main process then hands them what it prepared (references to the
window cache entries and to the pages' images, the label set): they read no documents themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

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


class NodeHandoff:
    """What the main process of a node hands to the node's other processes after preparing the data.

    The main process calls :meth:`publish` with a picklable object (kept small: references to cache
    entries, not documents); each waiting process finds it in :attr:`received` and can skip the
    preparation. ``received`` stays ``None`` outside a distributed launch, in the main process, and when
    nothing was published (the waiting processes then prepare the data themselves, from the caches).
    """

    def __init__(self, received: Any = None) -> None:
        self.received = received
        self.published: Any = None

    def publish(self, obj: Any) -> None:
        self.published = obj


def _node_rank() -> int:
    """This process's node (torchrun's ``GROUP_RANK``)."""
    if "GROUP_RANK" in os.environ:
        return int(os.environ["GROUP_RANK"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    return int(os.environ.get("RANK", "0")) // max(1, local)


def _write_handoff(obj: Any) -> str:
    """Pickle ``obj`` into a fresh file of the aetnet cache (which every process of the node sees)."""
    import pickle
    import tempfile

    from aetnet.data.ocr import default_cache_dir

    folder = default_cache_dir().parent / "handoff"
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=folder, suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:  # nothing is handed over: leave no partial file behind in the cache
        os.unlink(path)
        raise
    return path


@contextlib.contextmanager
def local_main_first(desc: str = "data preparation") -> Iterator[NodeHandoff]:
    """Run the block in the main process of each node first; the node's other processes wait, then run it.

    The block receives a :class:`NodeHandoff`. What the main process publishes there reaches the node's
    other processes (through a file in the aetnet cache), which can then skip the work (see
    :func:`aetnet.train.runner.run`: they read no documents). The wait uses its own gloo group with a long
    timeout (:data:`DATA_WAIT_TIMEOUT`), so a long OCR pass does not trip the training process group's
    timeout. If the main process fails, it still releases the others, which then meet the same error
    themselves. Outside a distributed launch the block simply runs.
    """
    if world_size() <= 1:
        yield NodeHandoff()
        return
    import pickle

    import torch.distributed as dist

    _ensure_process_group()
    group = dist.new_group(backend="gloo", timeout=DATA_WAIT_TIMEOUT)
    local_main = int(os.environ.get("LOCAL_RANK", "0")) == 0
    node = _node_rank()
    paths: list = [None] * dist.get_world_size()
    try:
        if not local_main:
            logger.info("rank %d waits for the main process of its node to finish %s", dist.get_rank(), desc)
            dist.barrier(group=group)
            dist.all_gather_object(paths, None, group=group)
            mine = next((path for n, path in filter(None, paths) if n == node), None)
            received = None
            if mine is not None:
                try:
                    with open(mine, "rb") as f:
                        received = pickle.load(f)
                except Exception as exc:  # noqa: BLE001  (reach the barrier below whatever happens: no hang)
                    logger.warning("could not read the data prepared by the node's main process from %s (%s); "
                                   "this process prepares it itself, from the caches", mine, exc)
            dist.barrier(group=group)  # every process has read its node's file: the main ones remove theirs
            yield NodeHandoff(received)
            return
        handoff = NodeHandoff()
        path = None
        try:
            yield handoff
            if handoff.published is not None:
                try:
                    path = _write_handoff(handoff.published)
                except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
                    logger.warning("could not hand the prepared data to the node's other processes (%s); they "
                                   "prepare it themselves, from the caches", exc)
        finally:
            dist.barrier(group=group)
            dist.all_gather_object(paths, (node, path) if path else None, group=group)
            dist.barrier(group=group)
            if path:
                os.unlink(path)
    finally:
        dist.destroy_process_group(group)
