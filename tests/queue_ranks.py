"""The two gloo processes of test_host_syncs' distributed enqueue check.

``mp.spawn`` children import the module of their function: this one imports only torch and the feature queue
(about 3 CPU s), where test_host_syncs imports transformers' Trainer (about 9 CPU s a process).
Imported as ``from tests.queue_ranks import ...``.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

DIM, SIZES = 4, ((3, 2), (1, 3), (3, 3))  # rows per rank at each step; rows_per_rank = 3


def queue_rows(step: int, sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of every rank at ``step`` (``sizes[r]`` rows of rank ``r``, in rank order) and their ids."""
    g = torch.Generator().manual_seed(step)
    n = sum(sizes)
    return torch.randn(n, DIM, generator=g), torch.arange(n) + 100 * step


def queue_worker(rank: int, port: int, out_dir: str, sync_methods: tuple[str, ...]) -> None:
    """Enqueue this rank's rows of every step of SIZES into queues of 7 and 4 rows (rows_per_rank 3) while the
    ``sync_methods`` of ``torch.Tensor`` are counted; save the calls and the queues' states."""
    from aetnet.strategies.aet.queue import FeatureQueue

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        queues = {k: FeatureQueue(DIM, k) for k in (7, 4)}  # 4: one step brings more rows than K
        calls = []
        originals = {name: getattr(torch.Tensor, name) for name in sync_methods}

        def wrap(name):
            def wrapper(self, *args, **kwargs):
                calls.append(name)
                return originals[name](self, *args, **kwargs)
            return wrapper

        for q in queues.values():
            q.rows_per_rank = 3
        for name in sync_methods:
            setattr(torch.Tensor, name, wrap(name))
        try:
            for step, sizes in enumerate(SIZES):
                feats, ids = queue_rows(step, sizes)
                lo = sum(sizes[:rank])
                for q in queues.values():
                    q.enqueue(feats[lo:lo + sizes[rank]], ids[lo:lo + sizes[rank]])
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
        torch.save({"calls": calls, **{k: q.state_dict() for k, q in queues.items()}}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while a peer is still talking to it
    finally:
        dist.destroy_process_group()
