"""The HTTP side of the prediction service (FastAPI): routes, status codes and the server runner.

Status codes of ``POST /predict``: 200 with the page records; 400 for a corrupt file, a missing
``file`` field, a QA model without ``question`` or ``--ocr never`` on a page without text layer;
408 for a body that did not arrive within ``body_timeout_s`` (a client that sends half a body and stalls);
413 for an upload over the byte limit (answered as soon as the body streaming in passes it,
with or without ``Content-Length``), the page limit or the pixel limit (an image's size is read from its
header, before any pixel is decoded); 415 for a file that is not PNG/JPEG/TIFF/PDF;
503 (with ``Retry-After``) when ``max_queue`` requests are already being served. Every error body is
``{"detail": "<one sentence naming the file and what is wrong>"}``.
"""


import asyncio
import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from aetnet.data.ocr.pdftext import PageTooLarge, TooManyPages
from aetnet.errors import AetnetError, DataError
from aetnet.serve.service import (
    CONFIG_ENV,
    BodyTimeout,
    ServeSettings,
    Service,
    UnsupportedUpload,
    UploadTooLarge,
    require_fastapi,
)

logger = logging.getLogger(__name__)

UPLOAD_SCHEMA = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "a PNG, JPEG, TIFF or PDF file"},
            "question": {"type": "string", "description": "the question (question-answering models only)"},
        }}}},
}
#: Room for the multipart envelope (boundaries, headers, the question) above the file's own bytes.
ENVELOPE_BYTES = 64 * 1024


class BodyLimit:
    """ASGI middleware: a request body is counted as it streams in and stops being read past ``max_bytes``
    or after ``timeout_s``.

    Whether the client sent ``Content-Length`` or a chunked body, ``receive`` raises
    :class:`~aetnet.serve.service.UploadTooLarge` as soon as the bytes received pass the limit, so the
    multipart parser never holds or spools more than ``max_bytes`` (plus one network read); the route
    answers 413 at once and the server discards the rest of the body as it arrives, storing none of it.
    A body still incomplete ``timeout_s`` after the first read raises :class:`~aetnet.serve.service.BodyTimeout`
    (408; the connection is closed), so a stalled client frees its place in the queue.

    Args:
        app: the ASGI application.
        max_bytes: most body bytes read per request.
        message: the 413 message.
        timeout_s: most seconds the whole body may take to arrive.
    """

    def __init__(self, app, max_bytes: int, message: str, timeout_s: float = 60.0):
        self.app, self.max_bytes, self.message, self.timeout_s = app, max_bytes, message, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received, deadline, complete = 0, None, False

        async def limited_receive():
            nonlocal received, deadline, complete
            if received > self.max_bytes:
                raise UploadTooLarge(self.message)
            if complete:  # the body is in: later reads wait for the disconnect, without a deadline
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s ({received} bytes "
                                  "came); send the whole body at once, or start the server with a larger "
                                  "--body-timeout") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise UploadTooLarge(self.message)
            return message

        await self.app(scope, limited_receive, send)


def _too_big(settings: ServeSettings) -> str:
    return (f"the upload is larger than the limit of {settings.max_upload_mb:g} MB; send a smaller file "
            "or start the server with a larger --max-upload-mb")


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def create_app(predictor, settings: ServeSettings | None = None, linker=None):
    """The FastAPI application serving ``predictor`` (a :class:`~aetnet.predict.predictor.Predictor`); with ``linker``
    (an :class:`aetnet.predict.pairs.PairPredictor` over it) each page record also carries its key-value ``pairs``."""
    fastapi = require_fastapi()
    from fastapi.responses import HTMLResponse, JSONResponse

    from aetnet.serve.page import PAGE

    settings = settings or ServeSettings()
    service = Service(predictor, settings, linker)

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        yield
        await service.batcher.stop()
        service.pool.shutdown(wait=False)

    app = fastapi.FastAPI(
        title="aetnet prediction service", lifespan=lifespan,
        description=f"{predictor.meta.get('task')} model ({predictor.kind}); upload a page to /predict.")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + ENVELOPE_BYTES, message=_too_big(settings),
                       timeout_s=settings.body_timeout_s)

    @app.exception_handler(UploadTooLarge)
    async def too_large(request, exc: UploadTooLarge):  # a body read past the limit outside /predict's own check
        return _error(413, str(exc))

    @app.exception_handler(BodyTimeout)
    async def too_slow(request, exc: BodyTimeout):  # a stalled body outside /predict's own check
        return _error(408, str(exc), {"Connection": "close"})

    @app.get("/health", summary="Model, settings, load and batching counters")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/", response_class=HTMLResponse, summary="A web page to try the model")
    async def page() -> str:
        return PAGE

    @app.post("/predict", summary="Predict every page of an uploaded document", openapi_extra={
        "requestBody": UPLOAD_SCHEMA, "responses": {
            "400": {"description": "corrupt file, missing field or question"},
            "408": {"description": "the request body did not arrive within the body timeout"},
            "413": {"description": "upload over the byte, page or pixel limit"},
            "415": {"description": "not a PNG, JPEG, TIFF or PDF file"},
            "503": {"description": "too many requests in progress; retry later"}}})
    async def predict(request: fastapi.Request, visualize: bool = False):
        if service.in_flight >= settings.max_queue:
            return _error(503, f"the server is busy ({service.in_flight} requests in progress, the limit "
                               f"is {settings.max_queue}); retry later", {"Retry-After": "1"})
        service.in_flight += 1
        try:
            return await _predict(request, service, settings, visualize, JSONResponse)
        finally:
            service.in_flight -= 1

    return app


async def _predict(request, service: Service, settings: ServeSettings, visualize: bool, response_class):
    limit, too_big = settings.max_upload_bytes, _too_big(settings)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + ENVELOPE_BYTES:
        return _error(413, too_big)
    try:
        async with request.form(max_files=1, max_fields=4) as form:
            upload, question = form.get("file"), form.get("question") or None
            if upload is None or isinstance(upload, str):
                return _error(400, "send the document as the multipart form field 'file' "
                                   "(curl -F file=@page.png http://HOST:PORT/predict)")
            name = upload.filename or "upload"
            data = await upload.read(limit + 1)
    except UploadTooLarge as exc:  # BodyLimit: the body streaming in passed the limit
        return _error(413, str(exc))
    except BodyTimeout as exc:  # BodyLimit: the body did not arrive in time
        return _error(408, str(exc), {"Connection": "close"})
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body
        if isinstance(exc, AetnetError):
            raise
        return _error(400, f"the request body is not a readable multipart form ({exc}); send the file as "
                           "the form field 'file'")
    if len(data) > limit:
        return _error(413, f"{name}: {too_big}")
    try:
        records = await service.predict(data, name, question, visualize)
    except (TooManyPages, PageTooLarge) as exc:
        return _error(413, str(exc))
    except UnsupportedUpload as exc:
        return _error(415, str(exc))
    except (DataError, AetnetError) as exc:
        return _error(400, str(exc))
    return response_class(records)


def app_from_env():
    """The application described by ``$AETNET_SERVE_CONFIG`` (how ``--workers N`` processes start)."""
    config = json.loads(os.environ[CONFIG_ENV])
    predictor, linker = load_predictors(config["model"], config.get("links"), config["predictor"],
                                        config.get("entity_map"))
    return create_app(predictor, ServeSettings(**config["settings"]), linker)


def load_predictors(model: str, links: str | None, options: dict[str, Any],
                    entity_map: dict[str, str] | None = None):
    """``(predictor, linker)``: the served model, and with ``links`` a pair predictor over it and the
    relation model (``entity_map``: the token model's entity types renamed for the relation model, as
    ``predict --entity-map``). A relation model cannot be served alone (it needs entities)."""
    from aetnet.predict.predictor import Predictor

    predictor = Predictor(model, **options)
    if links is None:
        if predictor.kind == "relation":
            raise AetnetError(f"{model} is a relation model: it links the entities a token model finds; serve "
                              f"the token model with it: aetnet serve TOKEN_MODEL --links {model}")
        if entity_map:
            raise AetnetError("--entity-map applies to key-value pairs (MODEL with --links RELATION_MODEL); drop it")
        return predictor, None
    from aetnet.predict.pairs import PairPredictor

    # --revision names a branch of MODEL's Hub repository; the relation model is read at its default branch.
    link_options = {k: v for k, v in options.items() if k != "revision"}
    return predictor, PairPredictor.from_predictors(predictor, Predictor(links, **link_options), model, links,
                                                    entity_map)


def run_server(model: str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               settings: ServeSettings | None = None, links: str | None = None,
               entity_map: dict[str, str] | None = None, **predictor_options) -> None:
    """Serve ``model`` (with ``links``: and the relation model linking its entities) until interrupted;
    ``workers`` processes each load the models (and batch on their own); ``predictor_options`` go to
    :class:`~aetnet.predict.predictor.Predictor`."""
    require_fastapi()
    import uvicorn

    settings = settings or ServeSettings()
    if workers > 1:
        os.environ[CONFIG_ENV] = json.dumps({"model": str(model), "links": None if links is None else str(links),
                                             "entity_map": entity_map or None,
                                             "predictor": predictor_options, "settings": asdict(settings)})
        load_predictors(str(model), links, predictor_options, entity_map)  # fail here, once, on a bad option
        uvicorn.run("aetnet.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="info")
        return
    predictor, linker = load_predictors(str(model), links, predictor_options, entity_map)
    uvicorn.run(create_app(predictor, settings, linker), host=host, port=port, log_level="info")
