"""Training batches that keep the windows of one page together, so a relation model's entities of a
long page meet in training as they do in evaluation (pairs across windows, see
:func:`aetnet.models.relation.batch_pair_targets`).

:class:`PageGroupedSampler` is an index sampler for the Trainer's loader: each epoch it shuffles the
pages, packs their windows into batch-sized bins (first fit; a page with more windows than a batch
fills whole bins with consecutive windows, so the cost per batch stays bounded), shuffles the full
bins and yields them one after another; the DataLoader cuts that order into batches exactly at the
bin edges. Only the bins left partly filled at the end are merged (their pages may then be split).
Every window is yielded exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def pack_pages(doc_indices: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Window indices in batch-sized bins, each page's windows in as few bins as they fit.

    Args:
        doc_indices: the page (``doc_index``) of each window; a page's windows are consecutive.
        batch_size: windows per batch.
        generator: the epoch's random generator (page and bin order).
    """
    pages: list[list[int]] = []
    for i, d in enumerate(doc_indices):
        if pages and doc_indices[pages[-1][0]] == d:
            pages[-1].append(i)
        else:
            pages.append([i])
    full: list[list[int]] = []
    open_bins: list[list[int]] = []
    for p in torch.randperm(len(pages), generator=generator).tolist():
        windows = pages[p]
        cut = len(windows) - len(windows) % batch_size
        full.extend(windows[k: k + batch_size] for k in range(0, cut, batch_size))
        rest = windows[cut:]
        if not rest:
            continue
        target = next((b for b in open_bins if len(b) + len(rest) <= batch_size), None)
        if target is None:
            open_bins.append(list(rest))
            continue
        target.extend(rest)
        if len(target) == batch_size:
            open_bins.remove(target)
            full.append(target)
    bins = [full[k] for k in torch.randperm(len(full), generator=generator).tolist()]
    leftover = [i for b in open_bins for i in b]
    bins.extend(leftover[k: k + batch_size] for k in range(0, len(leftover), batch_size))
    return bins


class PageGroupedSampler(Sampler[int]):
    """Window indices whose consecutive ``batch_size`` runs are page-packed bins (see the module doc).

    Args:
        doc_indices: the page of each window of the training set.
        batch_size: the per-device training batch.
        seed: the run's seed; epoch ``e`` draws from ``seed + e``.
    """

    def __init__(self, doc_indices: Sequence[int], batch_size: int, seed: int) -> None:
        self.doc_indices = [int(d) for d in doc_indices]
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.doc_indices)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1  # a loader that never calls set_epoch still reshuffles
        for bin_ in pack_pages(self.doc_indices, self.batch_size, generator):
            yield from bin_
