"""Memory of ``aetnet serve`` answering a long PDF, measured in one run.

The service reads a PDF page by page (a page is rendered, recognised and encoded while the request's
previous page is in the model), so a request holds at most 2 rendered pages whatever its length. This
script measures, on a born-digital letter-size PDF of ``--pages`` pages (rendered at 200 dpi):

1. ``all pages held``: the peak RSS growth of a process that renders every page and keeps them (what
   the service did before it streamed pages), as the reference;
2. ``service``: the peak RSS growth of an ``aetnet serve`` process (tiny model, its own process, one
   worker) answering the PDF once, then ``--clients`` concurrent requests of it, over what it reached
   after answering a 1-page PDF (warm-up: model, libraries and one rendered page already counted).

    python benchmarks/serve_memory.py                      # 20 pages, 4 concurrent clients
    python benchmarks/serve_memory.py --pages 10 --clients 2 --model runs/funsd/model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]
HOLD_ALL = """
import sys
from aetnet.data.ocr.pdftext import read_pdf
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
before = hwm()
pages = read_pdf(sys.argv[1], 200)
print(hwm() - before, pages[0].image.size[0] * pages[0].image.size[1] * 3)
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=20, help="pages of the long PDF (default 20, serve's --max-pages)")
    p.add_argument("--clients", type=int, default=4, help="concurrent requests in the second measurement")
    p.add_argument("--model", help="model folder (default: a tiny FUNSD model trained for 2 steps on the demo)")
    return p.parse_args()


def letter_pdf(path: Path, pages: int) -> Path:
    """A born-digital letter-size PDF with a few lines of text per page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for n in range(1, pages + 1):
            fig = plt.figure(figsize=(8.5, 11))
            for i, line in enumerate([f"Invoice {1000 + n}", f"Page {n} of {pages}", "Total: 12.50 USD"]):
                fig.text(0.1, 0.9 - 0.05 * i, line, fontsize=12)
            pdf.savefig(fig)
            plt.close(fig)
    return path


def hwm_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))


def post(base: str, path: Path) -> tuple[int, float]:
    boundary = "memory-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'.encode()
            + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    req = urllib.request.Request(f"{base}/predict", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=900) as resp:
        records = json.loads(resp.read())
    return len(records), time.perf_counter() - start


def serve(model: str, pages: int, scratch: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(scratch / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "aetnet", "serve", model, "--port", str(port),
                             "--max-pages", str(pages), "--max-upload-mb", "200"],
                            env=dict(os.environ, TMPDIR=str(scratch)), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/health", timeout=5).read()
            return proc, base
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"aetnet serve exited: {(scratch / 'server.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    raise SystemExit("aetnet serve did not start within 300 s")


def main() -> None:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="aetnet-serve-memory-"))
    try:
        model = args.model
        if model is None:
            from aetnet.train.runner import finetune

            model = str(finetune("funsd", base="tiny", demo=True, output=scratch / "run", overrides=TINY_BUDGET)
                        / "model")
        one, long = letter_pdf(scratch / "one.pdf", 1), letter_pdf(scratch / "long.pdf", args.pages)
        held, page_bytes = map(int, subprocess.run([sys.executable, "-c", HOLD_ALL, str(long)], check=True,
                                                   capture_output=True, text=True).stdout.split())
        proc, base = serve(model, args.pages, scratch)
        try:
            post(base, one)
            post(base, one)
            warm = hwm_kib(proc.pid)
            count, seconds = post(base, long)
            assert count == args.pages
            single = hwm_kib(proc.pid) - warm
            with ThreadPoolExecutor(args.clients) as pool:
                answers = list(pool.map(lambda _: post(base, long), range(args.clients)))
            assert all(n == args.pages for n, _ in answers)
            concurrent = hwm_kib(proc.pid) - warm
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mib = 1024
    print(f"{args.pages}-page letter PDF at 200 dpi: a rendered page is {page_bytes / 2**20:.1f} MiB of pixels")
    print(f"  all pages rendered and held (reference): peak RSS +{held / mib:.0f} MiB")
    print(f"  aetnet serve, 1 request ({seconds:.1f} s): peak RSS +{single / mib:.0f} MiB over the warm server "
          f"({warm / mib:.0f} MiB), {single / max(held, 1):.2f}x the reference")
    print(f"  aetnet serve, {args.clients} concurrent requests: peak RSS +{concurrent / mib:.0f} MiB, "
          f"{concurrent / max(held, 1):.2f}x the reference")


if __name__ == "__main__":
    main()
