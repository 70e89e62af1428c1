"""Feature queue: ring semantics against a Python reference, checkpoints, capacity, two ranks."""

from __future__ import annotations

import datetime
import logging
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from aetnet.strategies.aet.queue import FeatureQueue, gather_features


class _ListRing:
    """Reference ring: a Python list of K rows, written one row at a time."""

    def __init__(self, initial_rows: list[list[float]]):
        self.rows = [list(r) for r in initial_rows]
        self.ptr = 0

    def push(self, batch: list[list[float]]) -> None:
        for row in batch:
            self.rows[self.ptr] = list(row)
            self.ptr = (self.ptr + 1) % len(self.rows)


def _rows(q: FeatureQueue) -> list[list[float]]:
    return q.queue.t().tolist()


def _batch(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_init_is_normalised_and_seeded():
    torch.manual_seed(3)
    a = FeatureQueue(8, 10)
    torch.manual_seed(3)
    b = FeatureQueue(8, 10)
    assert torch.equal(a.queue, b.queue)
    assert a.queue.shape == (8, 10) and a.size == 10 and int(a.ptr) == 0 and a.ptr.dtype == torch.long
    norms = [sum(v * v for v in col) ** 0.5 for col in _rows(a)]
    assert norms == pytest.approx([1.0] * 10, abs=1e-5)


def test_wrap_across_the_end():
    q = FeatureQueue(2, 5)
    q.enqueue(torch.full((4, 2), 1.0))
    assert int(q.ptr) == 4
    q.enqueue(torch.tensor([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]))
    # rows 4, 0, 1 take the three new features, ptr lands on 2
    assert int(q.ptr) == 2
    assert _rows(q) == [[3.0, 3.0], [4.0, 4.0], [1.0, 1.0], [1.0, 1.0], [2.0, 2.0]]


def test_batch_larger_than_queue_keeps_last_k():
    q = FeatureQueue(1, 3)
    q.enqueue(torch.tensor([[9.0]]))  # ptr = 1
    q.enqueue(torch.arange(7, dtype=torch.float32).unsqueeze(1))  # 0..6
    # sequential writes at 1,2,0,1,2,0,1 -> last writes: slot0=5, slot1=6, slot2=4
    assert _rows(q) == [[5.0], [6.0], [4.0]]
    assert int(q.ptr) == (1 + 7) % 3


@pytest.mark.parametrize("sizes", [[3, 3, 3, 1], [7, 2, 11, 5, 0, 1], [13], [4, 4, 4, 4, 4]])
def test_sequential_enqueues_match_list_ring(sizes):
    torch.manual_seed(0)
    q = FeatureQueue(3, 6)
    ref = _ListRing(_rows(q))
    for i, n in enumerate(sizes):
        b = _batch(n, 3, seed=i)
        q.enqueue(b)
        ref.push(b.tolist())
        assert _rows(q) == ref.rows
        assert int(q.ptr) == ref.ptr


def test_buffers_round_trip_through_state_dict(tmp_path):
    torch.manual_seed(1)
    q = FeatureQueue(4, 7)
    q.enqueue(_batch(5, 4, seed=9), ids=torch.arange(10, 15))
    state = q.state_dict()
    assert set(state) == {"queue", "ptr", "ids"}
    torch.save(state, tmp_path / "q.pt")
    torch.manual_seed(2)
    restored = FeatureQueue(4, 7)
    assert not torch.equal(restored.queue, q.queue)
    restored.load_state_dict(torch.load(tmp_path / "q.pt", weights_only=True))
    assert torch.equal(restored.queue, q.queue) and int(restored.ptr) == 5
    assert restored.ids.tolist() == [10, 11, 12, 13, 14, -1, -1]


def test_ids_follow_the_ring():
    q = FeatureQueue(4, 5)
    q.enqueue(_batch(3, 4, seed=1), ids=torch.tensor([7, 8, 9]))
    q.enqueue(_batch(4, 4, seed=2), ids=torch.tensor([1, 2, 3, 4]))
    # Columns 3, 4, 0, 1 were written by the second batch, column 2 keeps the first batch's id 9.
    assert q.ids.tolist() == [3, 4, 9, 1, 2]
    q.enqueue(_batch(1, 4, seed=3))
    assert q.ids.tolist() == [3, 4, -1, 1, 2]


def test_rejects_wrong_shape_and_casts_dtype():
    q = FeatureQueue(4, 3)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        q.enqueue(torch.zeros(2, 5))
    q.enqueue(torch.ones(1, 4, dtype=torch.float64))
    assert q.queue.dtype == torch.float32 and q.queue[:, 0].tolist() == [1.0] * 4


def test_capacity_warning(caplog):
    q = FeatureQueue(2, 100)
    with caplog.at_level(logging.WARNING, logger="aetnet.strategies.aet.queue"):
        assert q.check_capacity(1000)
        assert not caplog.records
        assert not q.check_capacity(40)
    assert len(caplog.records) == 1
    assert "K=100" in caplog.text and "40 training examples" in caplog.text


def test_gather_is_identity_on_one_process():
    t = torch.randn(3, 2)
    assert gather_features(t) is t


# ---- two CPU processes with gloo ---------------------------------------------------------------

_DIM, _K = 4, 7
_RANK_SIZES = (3, 2)


def _rank_batch(rank: int, step: int) -> torch.Tensor:
    return _batch(_RANK_SIZES[rank], _DIM, seed=100 * step + rank)


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        torch.manual_seed(0)
        q = FeatureQueue(_DIM, _K)
        for step in range(2):
            q.enqueue(_rank_batch(rank, step))
        torch.save(q.state_dict(), f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while a peer is still talking to it
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_unequal_batches_share_one_queue(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(states[0]["queue"], states[1]["queue"])
    assert int(states[0]["ptr"]) == int(states[1]["ptr"]) == (2 * sum(_RANK_SIZES)) % _K

    torch.manual_seed(0)
    single = FeatureQueue(_DIM, _K)
    for step in range(2):
        single.enqueue(torch.cat([_rank_batch(0, step), _rank_batch(1, step)]))
    assert torch.equal(states[0]["queue"], single.queue)
    assert int(states[0]["ptr"]) == int(single.ptr)
