"""Data preparation once per node under ``torchrun`` / ``accelerate launch``.

Every process of a distributed run needs the same documents and windows. Preparing them means OCR
(hours at benchmark scale) and tokenisation; done by every rank, each page would be recognised once
per rank, with ranks racing on the same cache files. :func:`local_main_first` lets the main process
of each node prepare the data (filling the OCR cache, and any other on-disk cache) while the other
processes of the node wait. The main process then hands them what it prepared (references to the
window cache entries and to the pages' images, the label set) by a broadcast within the node: they read
no documents themselves.
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


def _picklable(obj: Any) -> bool:
    """Whether ``obj`` can be sent to the node's other processes (checked before the collective starts, so
    a failure cannot leave them waiting)."""
    import pickle

    try:
        pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        logger.warning("could not hand the prepared data to the node's other processes (%s); they prepare it "
                       "themselves, from the caches", exc)
        return False
    return True


def _node_group(group) -> tuple[Any, int]:
    """(a gloo group of this process's node, the global rank of the node's main process), agreed by all.

    Every process tells the others its node (torchrun's ``GROUP_RANK``, else its host name), so that all
    of them create the same groups in the same order and each node has exactly one main process (its
    lowest rank: ``LOCAL_RANK`` 0 under torchrun), whatever ``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` the
    launcher sets or leaves out (a launcher without them would otherwise make several processes of one
    group broadcast at once, and wait forever).
    """
    import socket

    import torch.distributed as dist

    nodes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, os.environ.get("GROUP_RANK") or socket.gethostname(), group=group)
    mine = None
    for node in dict.fromkeys(nodes):  # in order of first appearance: the same on every process
        ranks = [rank for rank, n in enumerate(nodes) if n == node]
        created = dist.new_group(ranks, timeout=DATA_WAIT_TIMEOUT, backend="gloo")
        if dist.get_rank() in ranks:
            mine = (created, ranks[0])
    return mine


@contextlib.contextmanager
def local_main_first(desc: str = "data preparation") -> Iterator[NodeHandoff]:
    """Run the block in the main process of each node first; the node's other processes wait, then run it.

    The block receives a :class:`NodeHandoff`. What the main process publishes there is sent to the node's
    other processes (a broadcast within the node, no file), which can then skip the work (see
    :func:`aetnet.train.runner.run`: they read no documents). The waits use gloo groups with a long
    timeout (:data:`DATA_WAIT_TIMEOUT`), so a long OCR pass does not trip the training process group's
    timeout. If the main process fails, it still releases the others (handing them nothing), which then
    meet the same error themselves. Outside a distributed launch the block simply runs.
    """
    if world_size() <= 1:
        yield NodeHandoff()
        return
    import torch.distributed as dist

    _ensure_process_group()
    group = dist.new_group(backend="gloo", timeout=DATA_WAIT_TIMEOUT)
    node_group, node_main = _node_group(group)
    box: list[Any] = [None]
    try:
        if dist.get_rank() != node_main:
            logger.info("rank %d waits for the main process of its node to finish %s", dist.get_rank(), desc)
            dist.barrier(group=group)
            try:
                dist.broadcast_object_list(box, src=node_main, group=node_group)
            except Exception as exc:  # the bytes arrived; rebuilding the object failed here (a module missing)
                logger.warning("could not read the data prepared by the node's main process (%s); preparing it "
                               "here, from the caches", exc)
                box[0] = None
            yield NodeHandoff(box[0])
            return
        handoff = NodeHandoff()
        try:
            yield handoff
            if handoff.published is not None and _picklable(handoff.published):
                box[0] = handoff.published
        finally:
            dist.barrier(group=group)
            dist.broadcast_object_list(box, src=node_main, group=node_group)
    finally:
        dist.destroy_process_group(node_group)
        dist.destroy_process_group(group)
