"""The prediction service over real HTTP on loopback: `aetnet serve` started as a process (two
workers) and in-process servers, for the three task kinds; concurrency, batching, limits, bad files,
a full queue and no temporary files left. Expected records come from the Predictor run directly."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from aetnet.predict.predictor import Predictor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(data: bytes | None, filename: str = "page.png", **fields: str) -> tuple[bytes, str]:
    """A multipart/form-data body with the file (field ``file``) and text fields, built by hand."""
    boundary = "aetnet-test-boundary-7MA4YWxkTrZu0gW"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if data is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 120):
    """``(status, parsed JSON or text, headers)`` of a GET (no body) or POST."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), exc.headers
    text = raw.decode("utf-8")
    try:
        return status, json.loads(text), headers
    except json.JSONDecodeError:
        return status, text, headers


def post_file(base: str, path_or_bytes, filename: str | None = None, query: str = "", **fields):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    name = filename or (Path(path_or_bytes).name if not isinstance(path_or_bytes, bytes) else "upload.bin")
    body, ctype = multipart(data, name, **fields)
    return request(f"{base}/predict{query}", body, ctype)


def same_records(got: list[dict], want: list[dict], name: str) -> None:
    """Equal records up to float rounding (and the file name, which is the upload's)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["file"] == name and g["page"] == w["page"] and g["source"] == w["source"]
        assert [x["text"] for x in g["words"]] == [x["text"] for x in w["words"]]
        assert [x["box"] for x in g["words"]] == [x["box"] for x in w["words"]]
        if w["kind"] == "token":
            assert [x["label"] for x in g["words"]] == [x["label"] for x in w["words"]]
            assert max((abs(a["score"] - b["score"]) for a, b in zip(g["words"], w["words"])), default=0) <= 1e-5
            assert g["entities"] == w["entities"]
        elif w["kind"] == "sequence":
            assert g["label"] == w["label"] and abs(g["score"] - w["score"]) <= 1e-5
        else:
            assert g["answer"]["words"] == w["answer"]["words"] and g["question"] == w["question"]


class InProcessServer:
    """uvicorn serving an app on a free loopback port in a thread of the test process."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the in-process server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def text_pdf(tmp_path_factory) -> Path:
    """A born-digital PDF (text drawn by matplotlib's PDF backend): words from its text layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path_factory.mktemp("pdf") / "digital.pdf"
    fig = plt.figure(figsize=(8.5, 11))
    for i, line in enumerate(["Purchase order 2231", "Date: 12/10/98", "Ship to: Acme Corp, Main Street 4"]):
        fig.text(0.1, 0.9 - 0.05 * i, line, fontsize=12)
    fig.savefig(path, format="pdf")
    plt.close(fig)
    return path


@pytest.fixture(scope="module")
def cli_server(funsd_run, aetnet_cache, tmp_path_factory):
    """`aetnet serve` in its own process with two workers, an empty TMPDIR and small limits."""
    tmp = tmp_path_factory.mktemp("server-tmp")
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), AETNET_CACHE=str(aetnet_cache), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "aetnet", "serve", str(funsd_run), "--port", str(port), "--workers", "2",
           "--max-upload-mb", "1", "--max-pages", "2", "--threads", "2"]
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(f"aetnet serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if request(f"{base}/health", timeout=5)[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            pytest.fail(f"aetnet serve did not answer within 240 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield base, tmp
    proc.terminate()
    proc.wait(timeout=60)


def test_cli_server_token_model_pages_json_and_web_page(cli_server, funsd_run, shared_data, text_pdf):
    base, _ = cli_server
    page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
    status, health, _ = request(f"{base}/health")
    assert status == 200 and health["kind"] == "token" and health["settings"]["max_pages"] == 2
    predictor = Predictor(funsd_run)
    status, records, _ = post_file(base, page)
    assert status == 200
    same_records(records, predictor.predict_file(page), page.name)
    status, records, _ = post_file(base, text_pdf)
    assert status == 200 and records[0]["source"] == "text-layer"
    same_records(records, predictor.predict_file(text_pdf), text_pdf.name)
    # The web page and its API: the form posts to predict?visualize=true and shows record.image.
    status, html, _ = request(f"{base}/")
    assert status == 200 and 'type="file"' in html and "predict?visualize=true" in html and "health" in html
    status, records, _ = post_file(base, page, query="?visualize=true")
    picture = Image.open(io.BytesIO(base64.b64decode(records[0]["image"].split(",", 1)[1])))
    assert status == 200 and picture.format == "PNG" and list(picture.size) == records[0]["size"]
    status, spec, _ = request(f"{base}/openapi.json")
    form = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and set(form["properties"]) == {"file", "question"}
    assert request(f"{base}/docs")[0] == 200


def test_cli_server_concurrent_requests_all_answered_alike(cli_server, funsd_run, shared_data, text_pdf):
    base, _ = cli_server
    page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
    predictor = Predictor(funsd_run)
    want = {page.name: predictor.predict_file(page), text_pdf.name: predictor.predict_file(text_pdf)}
    files = [page, text_pdf] * 6
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda f: post_file(base, f), files))
    for f, (status, records, _) in zip(files, answers):
        assert status == 200
        same_records(records, want[f.name], f.name)


def _tiff(pages: int) -> bytes:
    frames = [Image.new("RGB", (200, 100), "white") for _ in range(pages)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_cli_server_bad_uploads_get_one_clear_4xx_and_leave_no_temp_files(cli_server):
    base, tmp = cli_server
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(1024 * 1024 + 10)
    status, body, _ = post_file(base, big, "huge.png")
    assert status == 413 and "limit of 1 MB" in body["detail"]
    status, body, _ = post_file(base, _tiff(3), "three.tif")
    assert status == 413 and body["detail"].startswith("three.tif") and "3 pages" in body["detail"]
    status, body, _ = post_file(base, b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "broken.png")
    assert status == 400 and body["detail"].startswith("broken.png") and "cannot be decoded" in body["detail"]
    status, body, _ = post_file(base, b"%PDF-1.4\n garbage", "broken.pdf")
    assert status == 400 and body["detail"].startswith("broken.pdf") and "PDF" in body["detail"]
    status, body, _ = post_file(base, b"name,amount\nBob,3\n", "table.csv")
    assert status == 415 and "table.csv" in body["detail"] and "PNG, JPEG, TIFF or PDF" in body["detail"]
    body, ctype = multipart(None, question="no file")
    status, answer, _ = request(f"{base}/predict", body, ctype)
    assert status == 400 and "'file'" in answer["detail"]
    status, records, _ = post_file(base, _tiff(2), "blank.tif")  # at the page limit: served
    assert status == 200 and [r["page"] for r in records] == [1, 2] and records[0]["words"] == []
    assert sorted(os.listdir(tmp)) == []


def test_sequence_and_qa_models_in_process(seq_model, qa_model, shared_data):
    from aetnet.serve.app import create_app

    tiff = shared_data / "rvl_cdip/images/80035521.tif"
    seq = Predictor(seq_model)
    with InProcessServer(create_app(seq)) as base:
        status, records, _ = post_file(base, tiff)
        assert status == 200 and records[0]["kind"] == "sequence"
        same_records(records, seq.predict_file(tiff), tiff.name)
    doc = shared_data / "docvqa/documents/ffhx0227_1.png"
    question = next(q["question"] for q in json.loads((shared_data / "docvqa/val_v1.0_sample.json").read_text())
                    ["data"] if q["image"].endswith("ffhx0227_1.png"))
    qa = Predictor(qa_model)
    with InProcessServer(create_app(qa)) as base:
        status, records, _ = post_file(base, doc, question=question)
        assert status == 200 and records[0]["answer"]["text"]
        same_records(records, qa.predict_file(doc, question), doc.name)
        status, body, _ = post_file(base, doc)
        assert status == 400 and "question" in body["detail"]


def test_pages_of_concurrent_requests_share_one_model_call_and_a_full_queue_answers_503(
        funsd_run, shared_data, text_pdf):
    from aetnet.serve.app import create_app
    from aetnet.serve.service import ServeSettings

    page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
    predictor = Predictor(funsd_run)
    want = {page.name: predictor.predict_file(page), text_pdf.name: predictor.predict_file(text_pdf)}
    # Hold the model's first call until three requests are in: the queue (3) is then full.
    entered, release = threading.Event(), threading.Event()
    real_forward = predictor.forward_windows

    def gated_forward(items, batch_size=None):
        entered.set()
        assert release.wait(60)
        return real_forward(items, batch_size)

    predictor.forward_windows = gated_forward
    settings = ServeSettings(max_queue=3, batch_wait_ms=0, batch_windows=64)
    with InProcessServer(create_app(predictor, settings)) as base, ThreadPoolExecutor(3) as pool:
        first = pool.submit(post_file, base, page)
        assert entered.wait(60)
        rest = [pool.submit(post_file, base, f) for f in (page, text_pdf)]
        deadline = time.monotonic() + 60
        while request(f"{base}/health")[1]["waiting_pages"] < 2:
            assert time.monotonic() < deadline, "the two pages never reached the batcher"
            time.sleep(0.05)
        status, body, headers = post_file(base, page)
        assert status == 503 and "busy" in body["detail"] and headers["Retry-After"] == "1"
        release.set()
        answers = [first.result(), *(f.result() for f in rest)]
        stats = request(f"{base}/health")[1]["batching"]
    for (status, records, _), f in zip(answers, (page, page, text_pdf)):
        assert status == 200
        same_records(records, want[f.name], f.name)  # batched with another page: same result
    assert stats["calls_by_pages"] == {"1": 1, "2": 1} and stats["largest_call_pages"] == 2


def test_missing_serve_extra_is_one_clear_error(funsd_run, monkeypatch, capsys):
    from aetnet.cli.main import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` raise ImportError
    assert main(["serve", str(funsd_run), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "pip install aetnet[serve]" in err and "Traceback" not in err
    assert main(["serve", str(funsd_run), "--max-queue", "0"]) == 2
    assert "--max-queue must be at least 1" in capsys.readouterr().err


def stream_upload(base: str, file_bytes: int, chunked: bool, piece: int = 64 * 1024) -> tuple[int, dict, int]:
    """POST a multipart upload of ``file_bytes`` bytes to /predict over a raw socket, ``piece`` bytes at a
    time (as HTTP chunks, or after a ``Content-Length`` header), looking for the server's answer before
    each piece and stopping as soon as it is there.

    Returns:
        ``(status, JSON body, file bytes sent when the answer was seen)``.
    """
    import select

    port = int(base.rsplit(":", 1)[1])
    head, ctype = multipart(b"", "big.png")
    tail = b"\r\n--aetnet-test-boundary-7MA4YWxkTrZu0gW--\r\n"
    assert head.endswith(tail)
    preamble = head[:-len(tail)]
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(piece - 8)
    length = len(preamble) + file_bytes + len(tail)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    sent, answered = 0, False
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n{framing}\r\n\r\n"
                     .encode())
        parts = [preamble] + [data] * (file_bytes // piece) + [tail]
        for i, part in enumerate(parts):
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(part) if 0 < i < len(parts) - 1 else 0
        if not answered and chunked:
            sock.sendall(b"0\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += sock.recv(65536)
        header, body = raw.split(b"\r\n\r\n", 1)
        size = next(int(line.split(b":")[1]) for line in header.split(b"\r\n")
                    if line.lower().startswith(b"content-length"))
        while len(body) < size:
            body += sock.recv(65536)
    return int(header.split(b" ")[1]), json.loads(body), sent


def test_upload_limit_is_enforced_while_the_body_streams_in_chunked_or_not(funsd_run, shared_data):
    from aetnet.serve.app import create_app
    from aetnet.serve.service import ServeSettings

    page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
    predictor = Predictor(funsd_run)
    total = 96 * 1024 * 1024  # 96 times the limit: more than the loopback socket buffers can hold
    with InProcessServer(create_app(predictor, ServeSettings(max_upload_mb=1))) as base:
        for chunked in (True, False):
            status, body, sent = stream_upload(base, total, chunked)
            # The answer came while the client was still sending: the server read at most the limit
            # (plus what the kernel buffers in between), never the whole body.
            assert status == 413 and "limit of 1 MB" in body["detail"], (chunked, status, body)
            assert sent < total // 2, f"answered only after {sent} of {total} bytes (chunked={chunked})"
        # A chunked upload under the limit is read whole and served like any other.
        data = page.read_bytes()
        assert len(data) < 1024 * 1024
        body, ctype = multipart(data, page.name)
        pieces = iter([body[i:i + 8192] for i in range(0, len(body), 8192)])  # no length known: urllib chunks it
        req = urllib.request.Request(f"{base}/predict", data=pieces, method="POST", headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, records = resp.status, json.loads(resp.read())
        assert status == 200
        same_records(records, predictor.predict_file(page), page.name)
        assert request(f"{base}/health")[0] == 200


def _multi_page_pdf(path: Path, pages: int, blank: int) -> Path:
    """A born-digital PDF of ``pages`` pages with text (page ``blank``, 1-based, has none: it is OCRed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for n in range(1, pages + 1):
            fig = plt.figure(figsize=(8.5, 11))
            if n != blank:
                for i, line in enumerate([f"Invoice {1000 + n}", f"Page {n} of {pages}", "Total: 12.50 USD"]):
                    fig.text(0.1, 0.9 - 0.05 * i, line, fontsize=12)
            pdf.savefig(fig)
            plt.close(fig)
    return path


def test_pdf_is_served_page_by_page_with_few_rendered_pages_alive(funsd_run, tmp_path, monkeypatch):
    import weakref

    from aetnet.data.ocr import pdftext
    from aetnet.cli.main import main
    from aetnet.serve.app import create_app
    from aetnet.serve.service import ServeSettings

    pdf = _multi_page_pdf(tmp_path / "six.pdf", 6, blank=4)
    assert main(["predict", str(funsd_run), str(pdf), "--output", str(tmp_path / "out"), "--ocr-workers", "1"]) == 0
    want = json.loads((tmp_path / "out" / "six.json").read_text())
    assert [r["source"] for r in want] == ["text-layer"] * 3 + ["ocr"] + ["text-layer"] * 2
    # Count the rendered page images alive, through the function that renders them.
    lock, count = threading.Lock(), {"alive": 0, "peak": 0, "rendered": 0}
    real_render = pdftext.render_page

    def released():
        with lock:
            count["alive"] -= 1

    def counting_render(page, dpi):
        image = real_render(page, dpi)
        with lock:
            count["alive"] += 1
            count["rendered"] += 1
            count["peak"] = max(count["peak"], count["alive"])
        weakref.finalize(image, released)
        return image

    monkeypatch.setattr(pdftext, "render_page", counting_render)
    predictor = Predictor(funsd_run)
    with InProcessServer(create_app(predictor, ServeSettings(max_pages=6))) as base:
        status, records, _ = post_file(base, pdf)
        assert status == 200
        same_records(records, want, pdf.name)
        assert count["rendered"] == 6 and count["peak"] <= 2, count
        status, records, _ = post_file(base, pdf, query="?visualize=true")
        assert status == 200 and len(records) == 6 and all(r["image"].startswith("data:image/png") for r in records)
        assert count["rendered"] == 12 and count["peak"] <= 2 and count["alive"] == 0, count
    with InProcessServer(create_app(predictor, ServeSettings(max_pages=5))) as base:
        status, body, _ = post_file(base, pdf)
    assert status == 413 and body["detail"] == "six.pdf: 6 pages, more than the limit of 5; split the PDF"
    assert count["rendered"] == 12  # refused from the page count: no page was rendered
    # A page failing half-way (page 4 has no text layer, and --ocr never): one 400 naming it, the
    # pages after it are not read, and no rendered page is kept.
    with InProcessServer(create_app(Predictor(funsd_run, ocr="never"))) as base:
        status, body, _ = post_file(base, pdf)
    assert status == 400 and body["detail"].startswith("six.pdf page 4: --ocr never"), body
    assert count["rendered"] == 16 and count["alive"] == 0, count


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def test_an_image_past_the_pixel_limit_is_answered_413_from_its_header(funsd_run, shared_data):
    """A valid 11000 x 11000 PNG (121 M pixels, over the 120 M limit) of a few KB: 413 from its header.
    Decoding it would take 121 MB as 1-bit pixels and 363 MB as RGB: the server's (this process's)
    peak memory shows it never happens."""
    from aetnet.serve.app import create_app
    from aetnet.serve.service import ServeSettings

    buffer = io.BytesIO()
    Image.new("1", (11000, 11000)).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) < 1024 * 1024
    predictor = Predictor(funsd_run)
    with InProcessServer(create_app(predictor, ServeSettings())) as base:
        page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
        assert post_file(base, page)[0] == 200  # the model and the request path are warm
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset the peak resident set size (VmHWM) of this process (Linux)
            measured = True
        except OSError:
            measured = False
        before = _peak_rss_mb() if measured else 0.0
        status, body, _ = post_file(base, data, "huge.png")
        grown = _peak_rss_mb() - before if measured else 0.0
    assert grown < 100, f"peak memory grew by {grown:.0f} MB: the image was decoded"
    assert status == 413, body
    assert body["detail"] == ("huge.png: the image is 11000 x 11000 pixels: 121 M pixels, more than the 120 M a "
                              "page may have; downscale it")


def _stalled_client(port: int) -> socket.socket:
    """A raw loopback connection that sends the headers and half of a 64 KB body, then stalls."""
    body, ctype = multipart(b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024), "stalled.png")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict, bool]:
    """Status, JSON body and whether the server then closed the connection."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, rest = raw.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    closed = sock.recv(1) == b""  # the rest of the stalled body is not waited for
    return int(head.split()[1]), json.loads(rest[:length]), closed


def test_clients_that_stall_mid_body_are_cut_off_with_408_and_free_the_queue(funsd_run, shared_data):
    from aetnet.serve.app import create_app
    from aetnet.serve.service import ServeSettings

    page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
    settings = ServeSettings(max_queue=2, body_timeout_s=1.5)
    with InProcessServer(create_app(Predictor(funsd_run), settings)) as base:
        port = int(base.rsplit(":", 1)[1])
        started = time.monotonic()
        stalled = [_stalled_client(port) for _ in range(2)]
        try:
            deadline = time.monotonic() + 10
            while request(f"{base}/health")[1]["in_flight"] < 2:  # both hold a place in the queue
                assert time.monotonic() < deadline, "the stalled requests never reached /predict"
                time.sleep(0.05)
            assert post_file(base, page)[0] == 503  # while they hold it, the queue is full
            answers = [_read_response(sock) for sock in stalled]
            waited = time.monotonic() - started
        finally:
            for sock in stalled:
                sock.close()
        for status, body, closed in answers:
            assert status == 408 and closed, (status, body)
            assert body["detail"].startswith("the request body did not arrive within 1.5 s (")
        assert waited >= 1.5  # not before the timeout (and within the sockets' 30 s, or recv raises)
        assert request(f"{base}/health")[1]["in_flight"] == 0
        assert post_file(base, page)[0] == 200  # the queue is free again
