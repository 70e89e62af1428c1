"""OCR of many input files ahead of ``aetnet predict``, in a process pool.

``predict`` reads its inputs one page at a time (bounded memory), and Tesseract takes about a second
a page; :func:`prefetch_ocr` first sends every page that will need OCR (image frames; PDF pages
without a usable text layer under ``--ocr auto``, every PDF page under ``--ocr always``) to a pool
of worker processes, one page per task, which fill the OCR cache. The predicting pass then finds
every page's words in the cache. Pages are prepared in the workers exactly as the predictor prepares
them (same rendering, same RGB conversion), so the cache keys match. A file or page that cannot be
read is left alone here: the predicting pass meets it in order and reports it as usual.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

from aetnet.data.ocr.pool import resolve_workers
from aetnet.data.ocr.tesseract import OcrSettings, recognise
from aetnet.errors import DataError

logger = logging.getLogger(__name__)


def _jobs(files: Sequence[Path]) -> list[tuple[Path, int | None]]:
    """``(file, page index)`` per PDF page; ``(file, None)`` per image file (all its frames)."""
    from aetnet.data.ocr.pdftext import page_count

    jobs: list[tuple[Path, int | None]] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":  # aetnet pages files carry their words
            continue
        if suffix == ".pdf":
            jobs.extend((path, i) for i in range(page_count(path)))
        else:
            jobs.append((path, None))
    return jobs


def _ocr_job(job: tuple[Path, int | None, str, OcrSettings, str | None, int]) -> int:
    """Recognise the pages of one job that the predictor would OCR; returns how many Tesseract read."""
    from aetnet.data.ocr.inputs import iter_document
    from aetnet.data.ocr.pdftext import choose_source, iter_pdf

    path, index, mode, settings, cache_dir, dpi = job
    recognised = 0
    try:
        pages = (iter_pdf(path, dpi, text=mode != "always", only=index) if index is not None
                 else iter_document(path, text_layer=False, dpi=dpi))
        for page in pages:
            if choose_source(page.layer, mode, str(path)) == "ocr":
                recognised += not recognise(page.image, settings, cache_dir)[2]
    except DataError:
        pass  # reported by the predicting pass, in file order
    return recognised


def prefetch_ocr(files: Sequence[Path], mode: str, settings: OcrSettings, cache_dir: str | Path | None,
                 workers: int | None, dpi: int) -> int:
    """Fill the OCR cache for the pages of ``files`` that will be OCRed, with ``workers`` processes.

    Returns:
        The number of pages Tesseract read (0 with one worker: the predicting pass does the OCR).
    """
    from tqdm.auto import tqdm

    n = resolve_workers(workers)
    if n <= 1 or mode == "never":
        return 0
    jobs = [(path, index, mode, settings, None if cache_dir is None else str(cache_dir), dpi)
            for path, index in _jobs(files)]
    if len(jobs) < 2:
        return 0
    with multiprocessing.get_context("spawn").Pool(min(n, len(jobs))) as pool:
        done = sum(tqdm(pool.imap_unordered(_ocr_job, jobs), total=len(jobs), desc="OCR", unit="page"))
    logger.info("OCR of %d page job(s) with %d worker(s): %d page(s) recognised", len(jobs), n, done)
    return done
