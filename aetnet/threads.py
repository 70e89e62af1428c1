"""Keep PyTorch's CPU thread count within ``OMP_THREAD_LIMIT``.

With ``OMP_THREAD_LIMIT`` below ``torch.get_num_threads()`` (for example 1 on a 2-core machine),
PyTorch 2.x splits some CPU kernels for more OpenMP threads than the runtime grants, and the
convolution weight gradient (LayoutLMv3's patch embedding) comes back with uninitialised values
(norms of 1e18 or inf) instead of an error. Training must never see that, so every entry point
lowers PyTorch's thread count to the limit first.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def respect_omp_thread_limit() -> int | None:
    """Lower ``torch.set_num_threads`` to ``OMP_THREAD_LIMIT`` when that is smaller; returns the limit."""
    raw = os.environ.get("OMP_THREAD_LIMIT")
    if not raw:
        return None
    try:
        limit = int(raw)
    except ValueError:
        return None
    import torch

    if 0 < limit < torch.get_num_threads():
        logger.info("OMP_THREAD_LIMIT=%d: using %d PyTorch CPU threads (not %d)", limit, limit,
                    torch.get_num_threads())
        torch.set_num_threads(limit)
    return limit
