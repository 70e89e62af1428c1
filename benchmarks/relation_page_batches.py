"""Cross-window relation training: the pair-target cost of one batch stays bounded by the batch, not
the page.

Usage::

    python benchmarks/relation_page_batches.py --batch 2 --entities 60

A page of W windows with E entities each trains in batches of at most ``--batch`` windows (the
page-packed sampler, :mod:`aetnet.data.encoding.page_batches`): each batch builds (B*E)^2 pair targets and
logits. The script builds them with :func:`aetnet.models.relation.batch_pair_targets` for one batch
of a page of W = 1, 4, 16, 64 windows and prints the tensors' bytes and the time, beside what pairing
the whole page at once would cost ((W*E)^2), and their ratio, all measured in this run. The page
targets each window carries (E x page entities) still grow linearly with the page; the pair
matrices do not.
"""

from __future__ import annotations

import argparse
import time

import torch


def batch_inputs(windows: int, entities: int, page_entities: int):
    """Random in-window and page targets of ``windows`` windows of one page."""
    g = torch.Generator().manual_seed(0)
    rel = torch.randint(-1, 2, (windows, entities, entities), generator=g)
    rel[rel < 0] = -100
    index = torch.randint(0, page_entities, (windows, entities), generator=g)
    pages = torch.zeros(windows, entities, dtype=torch.long)
    primary = torch.rand(windows, entities, generator=g) < 0.8
    page_rel = torch.randint(0, 2, (windows, entities, page_entities), generator=g)
    return rel, index, pages, primary, page_rel


def cost(windows: int, entities: int, page_entities: int, width: int = 2 * 770) -> tuple[int, float]:
    """(bytes of the page targets, pair targets and pair logits, seconds) of pairing ``windows`` windows of
    a page of ``page_entities`` entities at once."""
    from aetnet.models.relation import batch_pair_targets

    inputs = batch_inputs(windows, entities, page_entities)
    factors = torch.randn(windows * entities, width)
    start = time.perf_counter()
    targets = batch_pair_targets(*inputs)
    logits = factors[:, : width // 2] @ factors[:, width // 2:].T
    seconds = time.perf_counter() - start
    size = targets.numel() * targets.element_size() + logits.numel() * logits.element_size()
    return size + inputs[4].numel() * inputs[4].element_size(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="windows per training batch (train.batch_size)")
    parser.add_argument("--entities", type=int, default=60, help="entities per window")
    args = parser.parse_args()
    print("| page windows | one batch MiB | one batch ms | whole page MiB | whole page ms | page / batch bytes |")
    print("|---|---|---|---|---|---|")
    for windows in (1, 4, 16, 64):
        b_bytes, b_s = cost(min(windows, args.batch), args.entities, windows * args.entities)
        p_bytes, p_s = cost(windows, args.entities, windows * args.entities)
        print(f"| {windows} | {b_bytes / 2**20:.1f} | {b_s * 1e3:.1f} | {p_bytes / 2**20:.1f} | {p_s * 1e3:.1f} | "
              f"{p_bytes / b_bytes:.1f}x |")


if __name__ == "__main__":
    main()
