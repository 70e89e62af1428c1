"""The prediction service: an HTTP API (FastAPI + uvicorn, ``pip install aetnet[serve]``) over a model.

- ``POST /predict``: a multipart upload (field ``file``: PNG, JPEG, TIFF or PDF; optional field
  ``question`` for QA models; query ``visualize=true`` adds each page drawn as a PNG data URL) ->
  the page records of ``aetnet predict`` (one per page, with ``source``: ``text-layer`` or ``ocr``).
- ``GET /health``: model, settings, requests in flight and batching counters.
- ``GET /``: a web page to drop a document on and see the drawn prediction next to the JSON.
- ``GET /docs``: the OpenAPI documentation.

Concurrent requests are read, OCRed and encoded in parallel threads; their pages meet in a
:class:`Batcher`, which runs the windows of every page waiting (up to ``batch_windows``) in one model
call. A request goes through its document page by page: a PDF page is rendered, recognised and
encoded while the request's previous page is in the model, so at most two rendered pages of one
request are alive at once, whatever its page count (PDFium calls take turns: :data:`PDFIUM_LOCK`).
At most ``max_queue`` requests are admitted at once (503 beyond), uploads are limited in bytes (413
as soon as the body streaming in passes the limit, see :class:`~aetnet.serve.app.BodyLimit`) and
pages (413, from the PDF's page count before any page is rendered), a file that is not a readable
PNG/JPEG/TIFF/PDF gets one 4xx naming what is wrong. Uploads are decoded from memory; the multipart
parser spools a large upload to an anonymous temporary file that is gone with the request, so nothing
is left on disk.

Example::

    from aetnet.predict.predictor import Predictor
    from aetnet.serve.service import ServeSettings, create_app
    app = create_app(Predictor("exports/funsd"), ServeSettings(max_queue=16))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from aetnet.data.ocr.pdftext import PageTooLarge, PdfPage, iter_pdf
from aetnet.data.ocr.pool import available_cores
from aetnet.errors import AetnetError, DataError

logger = logging.getLogger(__name__)

INSTALL_SERVE = "pip install aetnet[serve]"
CONFIG_ENV = "AETNET_SERVE_CONFIG"
MAGIC = {b"%PDF-": "pdf", b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"II*\x00": "tiff",
         b"MM\x00*": "tiff"}
#: PDFium must not be called from two threads at once (pypdfium2's documentation says so, even for
#: different documents): every PDF step of the service (open, render, text layer, close) holds it.
PDFIUM_LOCK = threading.Lock()


@dataclass
class ServeSettings:
    """Limits and batching of the service.

    Attributes:
        max_upload_mb: largest upload accepted (413 beyond).
        max_pages: most pages per document (413 beyond).
        max_queue: requests admitted at once, being decoded, OCRed, waiting or predicted (503 beyond).
        batch_windows: most windows in one model call (pages of several requests share a call).
        batch_wait_ms: how long the first waiting page waits for others to join its call.
        threads: threads decoding, OCRing and encoding requests in parallel.
        body_timeout_s: most seconds a request body may take to arrive (408 beyond), so that clients
            sending half a body and stalling do not hold the queue.
    """

    max_upload_mb: float = 20.0
    max_pages: int = 20
    max_queue: int = 32
    batch_windows: int = 32
    batch_wait_ms: float = 10.0
    threads: int = field(default_factory=lambda: min(8, available_cores()))
    body_timeout_s: float = 60.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class UnsupportedUpload(DataError):
    """An upload that is not a PNG, JPEG, TIFF or PDF file (415)."""


class UploadTooLarge(DataError):
    """A request body past the upload limit, raised while it streams in (413)."""


class BodyTimeout(DataError):
    """A request body that did not arrive within ``body_timeout_s`` (408)."""


def check_image_header(data: bytes, name: str, max_pages: int) -> None:
    """Refuse an image upload whose frames have more pixels than a page may have, from the header alone
    (before any pixel is decoded: an 11000 x 11000 PNG of 31 KB would decode to 363 MB).

    Raises:
        PageTooLarge: a frame over :data:`aetnet.data.ocr.images.MAX_IMAGE_PIXELS` (413). Unreadable files,
            too many frames: left to the decoding, which names them.
    """
    from PIL import Image

    from aetnet.data.ocr.images import MAX_IMAGE_PIXELS

    def refuse(width: int, height: int, frame: int) -> PageTooLarge:
        where = f" (frame {frame + 1})" if frame else ""
        return PageTooLarge(f"the image is {width} x {height} pixels{where}: {width * height / 1e6:.0f} M pixels, "
                            f"more than the {MAX_IMAGE_PIXELS / 1e6:.0f} M a page may have; downscale it", name)

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header, decodes nothing
            frames = getattr(img, "n_frames", 1)
            for frame in range(frames if frames <= max_pages else 0):
                if frame:
                    img.seek(frame)
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise refuse(img.width, img.height, frame)
    except Image.DecompressionBombError:  # PIL refuses twice the limit from the header: so do we
        raise PageTooLarge(f"the image has more than twice the {MAX_IMAGE_PIXELS / 1e6:.0f} M pixels a page may "
                           "have; downscale it", name) from None
    except PageTooLarge:
        raise
    except Exception:  # noqa: BLE001 - a corrupt header: decoding reports it (400)
        return


def sniff(data: bytes) -> str | None:
    """The type of an upload from its first bytes: ``pdf``, ``png``, ``jpeg``, ``tiff`` or ``None``."""
    head = data[:1024].lstrip(b"\x00\t\r\n ")  # some PDF writers put whitespace before %PDF-
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def upload_pages(data: bytes, name: str, text_layer: bool, max_pages: int, dpi: int) -> Iterator[PdfPage]:
    """The pages of an uploaded file, from memory, one at a time.

    A PDF's pages are rendered as they are asked for (its page count is checked against ``max_pages``
    when the first is asked for, before any page is rendered; advance it under :data:`PDFIUM_LOCK`);
    the frames of an image file are decoded here.

    Raises:
        UnsupportedUpload: not a PNG/JPEG/TIFF/PDF; DataError: corrupt; TooManyPages: past ``max_pages``
            (for a PDF: when its first page is asked for); PageTooLarge: an image past the pixel limit,
            from its header (a PDF page: from its size, before rendering).
    """
    from aetnet.data.ocr.inputs import image_pages

    kind = sniff(data)
    if not data:
        raise UnsupportedUpload("the upload is empty; send a PNG, JPEG, TIFF or PDF file", name)
    if kind is None:
        raise UnsupportedUpload(f"not a PNG, JPEG, TIFF or PDF file (it starts with {data[:8]!r}); "
                                "send one of those", name)
    if kind == "pdf":
        return iter_pdf(data, dpi, text=text_layer, name=name, max_pages=max_pages)
    check_image_header(data, name, max_pages)
    return iter([PdfPage(image, None) for image in image_pages(io.BytesIO(data), name, max_pages)])


def _next_page(pages: Iterator[PdfPage]) -> PdfPage | None:
    with PDFIUM_LOCK:
        return next(pages, None)


def _close_pages(pages: Iterator[PdfPage]) -> None:
    close = getattr(pages, "close", None)  # a PDF's generator: closes the document
    if close is not None:
        with PDFIUM_LOCK:
            close()


@dataclass
class _Job:
    items: list  # (window, pixels) of one page
    future: asyncio.Future


class Batcher:
    """Runs the windows of pages from concurrent requests together: one model call per batch.

    Args:
        predictor: a :class:`~aetnet.predict.predictor.Predictor`; its model runs in one dedicated thread.
        max_windows: most windows in one call (a page with more runs alone).
        wait_s: how long the first waiting page waits for others.
    """

    def __init__(self, predictor, max_windows: int, wait_s: float):
        self.predictor, self.max_windows, self.wait_s = predictor, max_windows, wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="aetnet-model")
        self.stats = {"model_calls": 0, "pages": 0, "windows": 0, "largest_call_pages": 0, "calls_by_pages": {}}
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.model_thread.shutdown(wait=False)

    async def submit(self, items: list) -> list[Any]:
        """The outputs of one page's windows (``(window, pixels)`` items), once its batch has run."""
        job = _Job(items, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        size = len(jobs[0].items)
        deadline = time.monotonic() + self.wait_s
        while size < self.max_windows:
            try:
                job = self.queue.get_nowait() if self.queue.qsize() else await asyncio.wait_for(
                    self.queue.get(), max(0.0, deadline - time.monotonic()))
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(job.items) > self.max_windows:
                self.queue.put_nowait(job)  # runs first in the next call
                break
            jobs.append(job)
            size += len(job.items)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            items = [item for job in jobs for item in job.items]
            try:
                outputs = await loop.run_in_executor(self.model_thread, self.predictor.forward_windows, items,
                                                     max(len(items), 1))
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self._count(jobs, items)
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(outputs[start:start + len(job.items)])
                start += len(job.items)

    def _count(self, jobs: list[_Job], items: list) -> None:
        s = self.stats
        s["model_calls"] += 1
        s["pages"] += len(jobs)
        s["windows"] += len(items)
        s["largest_call_pages"] = max(s["largest_call_pages"], len(jobs))
        s["calls_by_pages"][str(len(jobs))] = s["calls_by_pages"].get(str(len(jobs)), 0) + 1


class Service:
    """Request handling independent of HTTP: decode, words, windows, batched forward, records."""

    def __init__(self, predictor, settings: ServeSettings, linker=None):
        self.predictor, self.settings = predictor, settings
        #: an :class:`aetnet.predict.pairs.PairPredictor` over ``predictor`` when a relation model is served too
        self.linker = linker
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="aetnet-prep")
        self.encode_lock = threading.Lock()  # a fast tokenizer must not be called from two threads
        self.batcher = Batcher(predictor, settings.batch_windows, settings.batch_wait_ms / 1000)
        self.in_flight = 0

    def _read_page(self, pages: Iterator[PdfPage], question: str | None, where: str):
        """The next page (rendered), its document, windows, pixels and word source; ``None`` at the end."""
        page = _next_page(pages)
        if page is None:
            return None
        p = self.predictor
        words, boxes, lines, source = p.page_words(page.image, page.layer, where)
        with self.encode_lock:
            doc, windows = p.encode(page.image, words, boxes, question, lines)
        return page, doc, windows, p.pixels(page.image), source

    async def predict(self, data: bytes, name: str, question: str | None, visualize: bool) -> list[dict]:
        """The page records of an upload (as ``aetnet predict`` writes them), read page by page."""
        from aetnet.data.ocr.inputs import PDF_DPI

        loop = asyncio.get_running_loop()
        text_layer = self.predictor.ocr_mode != "always"
        pages = await loop.run_in_executor(self.pool, upload_pages, data, name, text_layer,
                                           self.settings.max_pages, PDF_DPI)
        try:
            return await self._predict_pages(pages, name, question, visualize)
        finally:
            await loop.run_in_executor(self.pool, _close_pages, pages)

    async def _predict_pages(self, pages: Iterator[PdfPage], name: str, question: str | None,
                             visualize: bool) -> list[dict]:
        loop, p = asyncio.get_running_loop(), self.predictor
        read = partial(self._read_page, pages, question)
        records: list[dict] = []
        ahead = loop.run_in_executor(self.pool, read, f"{name} page 1")
        try:
            while (item := await ahead) is not None:
                page, doc, windows, pixels, source = item
                item = None
                number = len(records) + 1
                # The next page is rendered and recognised while this one waits for the model.
                ahead = loop.run_in_executor(self.pool, read, f"{name} page {number + 1}")
                outputs = await self.batcher.submit([(w, pixels) for w in windows])
                record = {"file": name, "page": number, **p.decode(page.image, doc, windows, outputs, question),
                          "source": source}
                if self.linker is not None:  # key-value pairs, on the model thread like every model call
                    record["pairs"] = await loop.run_in_executor(self.batcher.model_thread, self.linker.link,
                                                                 page.image.convert("RGB"), record)
                    record["links_task"] = self.linker.links.meta["task"]
                if visualize:
                    record["image"] = await loop.run_in_executor(self.pool, _data_url, [page.image], record)
                records.append(record)
                page = None  # let the pixels go before the next page is taken
        finally:
            # After an error the page being read must be finished before the document is closed
            # (its error, if any, is the first one's consequence: the first is raised).
            with contextlib.suppress(Exception):
                await ahead
        return records

    def health(self) -> dict[str, Any]:
        p = self.predictor
        return {"status": "ok", "task": p.meta.get("task"), "kind": p.kind, "labels": p.labels,
                "links_task": self.linker.links.meta["task"] if self.linker is not None else None,
                "backend": p.backend.name, "ocr": p.ocr_mode, "in_flight": self.in_flight,
                "waiting_pages": self.batcher.queue.qsize(), "pid": os.getpid(),
                "settings": asdict(self.settings), "batching": self.batcher.stats}


def _data_url(images: list, record: dict) -> str:
    """The page drawn with its record as a PNG data URL. ``images`` holds the page image and is emptied:
    the pool keeps a finished call's arguments a moment longer, and it must not keep the page alive."""
    from aetnet.predict.predictor import draw_page

    image = images.pop()
    buffer = io.BytesIO()
    draw_page(image, record).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def require_fastapi():
    """Import FastAPI, or one clear error on how to install the service's extra."""
    try:
        import fastapi
        import python_multipart  # noqa: F401  (uploads)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise AetnetError(f"aetnet serve needs FastAPI, uvicorn and python-multipart ({exc.name} is "
                          f"missing); install them with `{INSTALL_SERVE}`") from None
    return fastapi
