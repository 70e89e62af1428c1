"""``aetnet serve MODEL``: an HTTP prediction service with a web page (needs ``pip install aetnet[serve]``)."""

from __future__ import annotations

import argparse

from aetnet.cli.model_flags import add_model_arg, add_model_flags, add_pair_flags, hub_folders

EPILOG = """examples:
  aetnet serve exports/funsd                                  # http://127.0.0.1:8000 (page), /docs (API)
  aetnet serve exports/rvl --host 0.0.0.0 --port 9000 --workers 2
  aetnet serve exports/funsd --backend onnx-int8 --max-queue 64
  aetnet serve OWNER/NAME --revision main                     # a model on the Hugging Face Hub
  aetnet serve exports/funsd --links exports/funsd-re        # records also carry key-value pairs
  curl -F file=@form.png http://127.0.0.1:8000/predict
  curl -F file=@letter.pdf -F question="What is the date?" http://127.0.0.1:8000/predict
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP (POST /predict, a web page at /)",
        description="Serve MODEL over HTTP: POST /predict (multipart field 'file': PNG/JPEG/TIFF/PDF; "
        "'question' for QA models) returns the page records of `aetnet predict`; GET / is a web page to "
        "try it; GET /health and /docs (OpenAPI). Concurrent requests share model calls; a full queue "
        "answers 503, an upload over the limits 413.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arg(p)
    add_pair_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model copy")
    add_model_flags(p)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB (413 beyond)")
    p.add_argument("--max-pages", type=int, default=20, help="most pages per document (413 beyond)")
    p.add_argument("--max-queue", type=int, default=32, help="requests served at once (503 beyond)")
    p.add_argument("--batch-windows", type=int, default=32, help="most windows in one model call")
    p.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="how long a page waits for others to share its model call (default 10)")
    p.add_argument("--body-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="most seconds a request body may take to arrive (408 beyond; default 60), so that "
                   "clients sending half a body and stalling do not hold the queue")
    p.add_argument("--threads", type=int, help="threads decoding and OCRing requests (default: cores, max 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.errors import AetnetError

    for name in ("workers", "max_pages", "max_queue", "batch_windows", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise AetnetError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.max_upload_mb <= 0 or args.batch_wait_ms < 0 or args.body_timeout <= 0:
        raise AetnetError("--max-upload-mb and --body-timeout must be positive and --batch-wait-ms not negative")
    model, links = hub_folders(args.revision, args.model, args.links)  # a wrong Hub id fails before PyTorch loads
    from aetnet.predict.pairs import parse_entity_map
    from aetnet.serve.app import run_server
    from aetnet.serve.service import ServeSettings

    settings = ServeSettings(max_upload_mb=args.max_upload_mb, max_pages=args.max_pages, max_queue=args.max_queue,
                             batch_windows=args.batch_windows, batch_wait_ms=args.batch_wait_ms,
                             body_timeout_s=args.body_timeout)
    if args.threads:
        settings.threads = args.threads
    run_server(model, host=args.host, port=args.port, workers=args.workers, settings=settings,
               device=args.device, ocr=args.ocr, backend=args.backend, links=links,
               entity_map=parse_entity_map(args.entity_map))
    return 0
