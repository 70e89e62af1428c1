"""OCR of many pages in a process pool, through the on-disk cache.

Tesseract reads one page at a time on one core (about a second a page), so a benchmark split is
recognised by a pool of worker processes, one page per task. Every worker goes through the same
cache as :func:`aetnet.data.ocr.tesseract.ocr_image`: a page already recognised (by this run, an earlier run,
a killed run or another machine sharing the cache folder) is read from its JSON file, never given to
Tesseract again. Each result is written to the cache the moment its page is done, so a killed run
loses at most the pages in flight.

Results come back in the order of the pages, whatever the number of workers, and a bad page comes
back as its :class:`~aetnet.errors.DataError` in its place: callers apply ``--on-bad-document`` in
page order, so skipping and stopping behave exactly as in a serial run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aetnet.data.ocr.tesseract import OcrSettings, PageSource, is_cached, recognise
from aetnet.errors import AetnetError, DataError

logger = logging.getLogger(__name__)


@dataclass
class PageOcr:
    """The OCR of one page.

    Attributes:
        words: the page's words in Tesseract's reading order.
        boxes: one pixel box ``[x0, y0, x1, y1]`` per word.
        cached: ``True`` when the cache answered (Tesseract did not run for this page).
    """

    words: list[str]
    boxes: list[list[float]]
    cached: bool


def available_cores() -> int:
    """Cores this process may run on (the CPU affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """``workers`` processes, or every available core for ``None``/``0``.

    Raises:
        AetnetError: a negative count.
    """
    if workers is None or workers == 0:
        return available_cores()
    if workers < 0:
        raise AetnetError(f"the number of OCR workers must be positive (or 0 for all cores), got {workers}")
    return int(workers)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` -> ``(0, 1)`` (everything).

    Raises:
        AetnetError: anything else, with the expected form.
    """
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise AetnetError(f"--shard {text!r} is not I/N (for example 0/4 ... 3/4)") from None
    if count < 1 or not 0 <= index < count:
        raise AetnetError(f"--shard {text}: need 0 <= I < N, for example 0/{max(count, 1)}")
    return index, count


def shard(items: Sequence, index: int, count: int) -> list:
    """Every ``count``-th item starting at ``index``: shards ``0..count-1`` are disjoint and cover all."""
    return list(items[index::count])


def _missing(page: PageSource, settings: OcrSettings, cache_dir: str | Path | None) -> bool:
    try:
        return not is_cached(page, settings, cache_dir)
    except DataError:
        return False  # a bad page fails the same way in any process


def _work(job: tuple[PageSource, OcrSettings, str | None]) -> PageOcr | DataError:
    page, settings, cache_dir = job
    try:
        words, boxes, cached = recognise(page, settings, cache_dir)
    except DataError as exc:  # the page is bad: its place in the results says so
        return exc
    return PageOcr(words, boxes, cached)


def ocr_many(
    pages: Sequence[PageSource],
    settings: OcrSettings | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    desc: str = "OCR",
) -> list[PageOcr | DataError]:
    """Recognise ``pages`` (cached) with ``workers`` processes; results in page order.

    Args:
        pages: image files, encoded bytes, dataset rows or PIL images
            (see :func:`~aetnet.data.ocr.tesseract.ocr_image`).
        settings: Tesseract settings; default :class:`OcrSettings` ().
        cache_dir: the OCR cache folder; default :func:`aetnet.data.ocr.tesseract.default_cache_dir`.
        workers: processes; ``None``/``0``: every available core; ``1`` runs in this process.
        desc: the progress bar's label.

    Returns:
        One :class:`PageOcr` per page, or the page's :class:`DataError` (missing, corrupt image).

    Raises:
        AetnetError: Tesseract or a language pack is missing, or Tesseract fails (not a page's fault).
    """
    return list(iter_ocr(pages, settings, cache_dir, workers, desc))


def iter_ocr(
    pages: Sequence[PageSource],
    settings: OcrSettings | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    desc: str = "OCR",
) -> Iterator[PageOcr | DataError]:
    """:func:`ocr_many` as a stream: each page's result as soon as it is read or recognised, in page order,
    never all of them at once (the reading of a large split holds one page's words at a time)."""
    from tqdm.auto import tqdm

    settings = settings or OcrSettings()
    n = min(resolve_workers(workers), max(1, len(pages)))
    if n > 1 and not any(_missing(page, settings, cache_dir) for page in pages):
        n = 1  # everything cached (a second run, a waiting rank): reading needs no pool of processes
    cache = str(cache_dir) if cache_dir is not None else None
    jobs = ((page, settings, cache) for page in pages)
    bar = tqdm(total=len(pages), desc=desc, unit="page", disable=len(pages) < 2)
    counts = {"recognised": 0, "cached": 0, "bad": 0}
    try:
        if n == 1:
            results = map(_work, jobs)
            for result in results:
                _tally(counts, result)
                bar.update()
                yield result
        else:
            # spawn: the workers never inherit the trainer's threads, CUDA state or open files.
            with multiprocessing.get_context("spawn").Pool(n) as pool:
                for result in pool.imap(_work, jobs, chunksize=1):
                    _tally(counts, result)
                    bar.update()
                    yield result
    finally:
        bar.close()
    logger.info("%s: %d page(s), %d recognised by Tesseract, %d from the cache, %d bad (%d worker(s))",
                desc, sum(counts.values()), counts["recognised"], counts["cached"], counts["bad"], n)


def _tally(counts: dict[str, int], result: PageOcr | DataError) -> None:
    key = "bad" if isinstance(result, DataError) else "cached" if result.cached else "recognised"
    counts[key] += 1


def recognise_dataset(task, cfg, demo: bool = False, workers: int | None = None, index: int = 0, count: int = 1,
                      desc: str | None = None) -> tuple[list, OcrSettings, list[PageOcr | DataError]]:
    """Recognise every page of ``task``'s dataset that needs Tesseract (shard ``index`` of ``count``) into
    the OCR cache, with the run's settings (``data.ocr_lang``, ``data.ocr_psm``): what ``aetnet ocr``
    runs, and ``aetnet compare --devices`` before its parallel runs (which then find every page cached
    instead of recognising the same pages at the same time).

    Returns:
        ``(pages, settings, results)``: the ``(page id, page)`` pairs of the shard, the OCR settings and
        one result per page as :func:`ocr_many` gives them.

    Raises:
        AetnetError: the task reads its words from its annotations (nothing to recognise).
    """
    pages = shard(task.pages_to_recognise(cfg, demo=demo), index, count)
    settings = OcrSettings(lang=cfg.data.ocr_lang, psm=cfg.data.ocr_psm)
    results = ocr_many([page for _, page in pages], settings, workers=workers,
                       desc=desc or f"OCR {task.name} shard {index}/{count}")
    return pages, settings, results
