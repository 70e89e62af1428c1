"""Feature queues for the contrastive losses (MoCo/ALBEF style), safe for any batch size.

A :class:`FeatureQueue` holds K past momentum features as columns of a ``(dim, K)`` buffer, written
as a ring. Differences from the released code:

- no ``K % batch == 0`` assertion: any batch size works, including a short last batch and batches
  larger than K (only the last K features are kept), with one vectorised index write;
- under ``torch.distributed`` the features of all ranks are gathered first (unequal batch sizes are
  allowed), so every rank's queue stays identical; on one process nothing is gathered. With
  :attr:`FeatureQueue.rows_per_rank` set (the trainer sets it to the per-device batch size) every
  rank pads its rows to that bound, so the gather needs no host read of the batch sizes and the
  ring is written with tensor arithmetic only (no host-device synchronisation per step);
- :meth:`FeatureQueue.check_capacity` warns when K exceeds the training set.

The queue and pointer are buffers, so checkpoints save and restore them with the model.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

__all__ = ["FeatureQueue", "gather_features", "world_size"]


def world_size() -> int:
    """Number of processes in the default group, 1 when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@torch.no_grad()
def gather_features(t: Tensor) -> Tensor:
    """Concatenate ``t`` from all ranks in rank order, without gradient.

    Batch sizes may differ across ranks: the sizes are gathered first and every rank pads its tensor
    to the largest size, since ``all_gather`` needs equal shapes.

    Args:
        t: ``(B_r, ...)`` on rank r; trailing dimensions, dtype and device equal on all ranks.

    Returns:
        ``(sum_r B_r, ...)``: rank 0's rows first. ``t`` itself when not distributed or world size 1.
    """
    n_ranks = world_size()
    if n_ranks == 1:
        return t
    t = t.detach().contiguous()
    size = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    sizes = [torch.empty_like(size) for _ in range(n_ranks)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    largest = max(counts)
    if t.shape[0] < largest:
        pad = t.new_zeros((largest - t.shape[0], *t.shape[1:]))
        t = torch.cat([t, pad], dim=0)
    parts = [torch.empty_like(t) for _ in range(n_ranks)]
    dist.all_gather(parts, t)
    return torch.cat([part[:count] for part, count in zip(parts, counts)], dim=0)


class FeatureQueue(nn.Module):
    """A ring buffer of K feature vectors, kept as the columns of a ``(dim, K)`` buffer.

    Args:
        dim: feature dimension (256 for AETNet's projections).
        size: number of queued features K.

    Attributes:
        queue: ``(dim, K)`` buffer, initialised with L2-normalised random columns (torch's RNG, so
            ``torch.manual_seed`` makes it reproducible and equal across ranks).
        ptr: 0-d long buffer, the column the next feature goes into.
        ids: ``(K,)`` long buffer, the document id of each column (-1: unknown or random).
    """

    queue: Tensor
    ptr: Tensor
    ids: Tensor
    #: Upper bound on any rank's rows per :meth:`enqueue` under ``torch.distributed`` (the per-device
    #: batch size); set, the distributed path pads to it and never synchronises with the host.
    rows_per_rank: int | None = None

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if int(dim) <= 0 or int(size) <= 0:
            raise AetnetError(
                f"feature queue needs a positive dimension and size, got dim={dim}, size={size}; "
                "set the queue size in the recipe to a positive number"
            )
        self.register_buffer("queue", F.normalize(torch.randn(int(dim), int(size)), dim=0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("ids", torch.full((int(size),), -1, dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of queued features K."""
        return self.queue.shape[1]

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self.queue.shape[0]

    def features(self) -> Tensor:
        """The queued features as rows, ``(K, dim)``, detached (a transposed view, no copy)."""
        return self.queue.detach().t()

    @torch.no_grad()
    def enqueue(self, feats: Tensor, ids: Tensor | None = None) -> None:
        """Write ``feats`` (gathered from all ranks when distributed) into the ring.

        The result equals writing the rows one by one at ``ptr, ptr+1, ...`` modulo K. When more than K
        rows arrive at once only the last K survive, so only those are written (no index is written
        twice, which keeps the scatter deterministic).

        Args:
            feats: ``(B, dim)`` features of this rank's batch; any B >= 0. Cast to the queue's dtype.
            ids: ``(B,)`` document ids of the rows (for same-document masking), gathered the same
                way; ``None`` stores -1 (matches no document).
        """
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"enqueue expects features shaped (B, {self.dim}), got {tuple(feats.shape)}")
        if self.rows_per_rank is not None and world_size() > 1:
            self._enqueue_padded(feats.detach(), ids)
            return
        feats = gather_features(feats.detach())
        if ids is None:
            ids = torch.full((feats.shape[0],), -1, dtype=torch.long, device=self.ids.device)
        else:
            ids = gather_features(ids.detach().long())
        n = feats.shape[0]
        if n == 0:
            return
        k = self.size
        skipped = max(n - k, 0)
        kept = feats[skipped:]
        # Tensor arithmetic on ptr avoids a host sync on accelerators.
        index = (self.ptr + skipped + torch.arange(kept.shape[0], device=self.queue.device)) % k
        self.queue[:, index] = kept.to(device=self.queue.device, dtype=self.queue.dtype).t()
        self.ids[index] = ids[skipped:].to(self.ids.device)
        self.ptr.copy_((self.ptr + n) % k)

    @torch.no_grad()
    def _enqueue_padded(self, feats: Tensor, ids: Tensor | None) -> None:
        """Distributed enqueue without host syncs: pad to ``rows_per_rank``, gather, select on device.

        Column ``c`` of the ring receives the last gathered row at a position ``q < n`` (rank order,
        then row order) with ``(ptr + q) % K == c``, exactly what writing the rows one by one does.
        """
        cap, k, device = int(self.rows_per_rank), self.size, self.queue.device
        b = feats.shape[0]
        if b > cap:
            raise AetnetError(
                f"feature queue: this rank enqueues {b} rows but rows_per_rank is {cap}; set rows_per_rank to "
                "the largest per-device batch size (or None to gather the sizes at every step)"
            )
        ids = torch.full((b,), -1, dtype=torch.long, device=feats.device) if ids is None else ids.detach().long()
        rows = feats.new_zeros((cap, self.dim))
        rows[:b] = feats
        row_ids = ids.new_full((cap,), -1)
        row_ids[:b] = ids
        n_ranks = world_size()
        size = torch.full((1,), b, dtype=torch.long, device=feats.device)
        gathered = {}
        for name, t in (("rows", rows), ("ids", row_ids), ("sizes", size)):
            parts = [torch.empty_like(t) for _ in range(n_ranks)]
            dist.all_gather(parts, t.contiguous())
            gathered[name] = torch.stack(parts).to(device)
        sizes = gathered["sizes"].view(n_ranks)
        ends = sizes.cumsum(0)  # (W,) inclusive
        n = ends[-1]
        # Position relative to ptr of every column, and the last position q < n that lands there.
        p = (torch.arange(k, device=device) - self.ptr) % k
        written = p < n
        q = p + k * torch.div((n - 1 - p).clamp(min=0), k, rounding_mode="floor")
        rank = torch.searchsorted(ends, q, right=True).clamp(max=n_ranks - 1)
        flat = (rank * cap + q - (ends - sizes)[rank]).clamp(0, n_ranks * cap - 1)
        new = gathered["rows"].view(n_ranks * cap, self.dim)[flat].to(self.queue.dtype).t()  # (D, K)
        self.queue.copy_(torch.where(written.unsqueeze(0), new, self.queue))
        self.ids.copy_(torch.where(written, gathered["ids"].view(-1)[flat], self.ids))
        self.ptr.copy_((self.ptr + n) % k)

    def check_capacity(self, num_train_examples: int) -> bool:
        """Warn when K exceeds the number of training examples.

        With K > N the queue needs K/N epochs to lose its random initial columns, and once full it
        holds several stale copies of every training document, which then act as negatives against
        themselves. Choose K below the training-set size.

        Args:
            num_train_examples: size of the training set (all ranks together).

        Returns:
            True when the queue fits (K <= N), False when the warning was logged.
        """
        if num_train_examples <= 0:
            raise ValueError(f"num_train_examples must be positive, got {num_train_examples}")
        if self.size > num_train_examples:
            logger.warning(
                "feature queue size K=%d exceeds the %d training examples: most entries would stay random "
                "for the first %.1f epochs and then hold stale duplicates of the same documents; set the "
                "queue size to at most %d (e.g. a few times the global batch size)",
                self.size,
                num_train_examples,
                self.size / num_train_examples,
                num_train_examples,
            )
            return False
        return True

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}"
