"""Prediction speed on CPU, measured in one run, in three sections:

1. ``words``: where a page's words come from. The real FUNSD test pages are turned into born-digital
   PDFs (the page image with its annotated words as a text layer, drawn with matplotlib); per page,
   Tesseract on the rendering (empty OCR cache) against reading the text layer, and ``aetnet
   predict`` end to end with ``--ocr always`` against ``--ocr auto`` (tiny model).
2. ``model``: PyTorch fp32 vs ONNX fp32 vs ONNX int8 at base shapes: a random-weight LayoutLMv3 of
   the base size (hidden 768, 12 layers, 224x224 image; no download) exported with ``--onnx
   --quantize``, run over the FUNSD pages' annotated words in 512-token windows.
3. ``service``: ``aetnet serve`` (its own process, tiny model) answering the born-digital PDFs for 1,
   4 and 16 concurrent clients: requests/s and p50/p95 latency, and how many pages shared a model call.

    python benchmarks/predict_speed.py                        # all sections
    python benchmarks/predict_speed.py --sections words,service --json figures.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FUNSD_TEST = Path(__file__).resolve().parents[1] / "tests" / "data" / "funsd" / "dataset" / "testing_data"
TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]
FUNSD_LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--funsd", default=str(FUNSD_TEST), help="FUNSD testing_data folder (images/, annotations/)")
    p.add_argument("--max-pages", type=int, default=6, help="pages for the words section")
    p.add_argument("--model-pages", type=int, default=2, help="pages for the base-shape model section")
    p.add_argument("--repeats", type=int, default=3, help="passes per backend in the model section")
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level (service)")
    p.add_argument("--sections", default="words,model,service", help="comma-separated sections to run")
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p.parse_args()


def funsd_pages(root: Path, limit: int) -> list[tuple[Path, list[str], list[list[int]]]]:
    """(image, words, pixel boxes) of the first ``limit`` FUNSD pages, from their annotations."""
    pages = []
    for ann in sorted((root / "annotations").glob("*.json"))[:limit]:
        words, boxes = [], []
        for entity in json.loads(ann.read_text())["form"]:
            for w in entity["words"]:
                if w["text"].strip():
                    words.append(w["text"].strip())
                    boxes.append(w["box"])
        pages.append((root / "images" / f"{ann.stem}.png", words, boxes))
    return pages


def text_pdf(image_path: Path, words: list[str], boxes: list[list[int]], out: Path) -> Path:
    """A PDF of the page image with the words drawn (in black, over the picture) at their boxes:
    what a born-digital PDF carries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    image = Image.open(image_path).convert("RGB")
    width, height = image.size
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    fig.figimage(image, 0, 0, alpha=0.3)
    for word, (x0, y0, _, y1) in zip(words, boxes):
        size = max(2.0, (y1 - y0) * 0.72 * 0.9)  # box height in points
        fig.text(x0 / width, 1 - y1 / height, word, fontsize=size)
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(out, format="pdf", dpi=100)
    plt.close(fig)
    return out


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def words_section(pdfs: list[Path], model_dir: str, scratch: Path) -> dict:
    import pypdfium2 as pdfium

    from aetnet.data.ocr.pdftext import read_text_layer
    from aetnet.data.ocr.tesseract import ocr_image
    from aetnet.predict.predictor import PDF_DPI, Predictor, predict_paths

    ocr_s, layer_s, render_s, ocr_cpu = [], [], [], []
    for i, path in enumerate(pdfs):
        pdf = pdfium.PdfDocument(str(path))
        page = pdf[0]
        start = time.perf_counter()
        image = page.render(scale=PDF_DPI / 72).to_pil().convert("RGB")
        render_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        read_text_layer(page, image.size)
        layer_s.append(time.perf_counter() - start)
        start, cpu = time.perf_counter(), _children_cpu()
        ocr_image(image, cache_dir=scratch / f"ocr-words-{i}")
        ocr_s.append(time.perf_counter() - start)
        ocr_cpu.append(_children_cpu() - cpu)  # Tesseract runs as a child process
        page.close()
        pdf.close()
    end_to_end = {}
    for mode in ("always", "auto"):
        predictor = Predictor(model_dir, ocr=mode, ocr_cache=scratch / f"ocr-e2e-{mode}")
        start = time.perf_counter()
        results = predict_paths(predictor, pdfs)
        end_to_end[mode] = {"pages_per_s": len(pdfs) / (time.perf_counter() - start),
                            "sources": sorted({r["source"] for rs in results.values() for r in rs})}
    return {"pages": len(pdfs), "ocr_s_per_page": statistics.mean(ocr_s),
            "ocr_cpu_s_per_page": statistics.mean(ocr_cpu),
            "text_layer_s_per_page": statistics.mean(layer_s), "render_s_per_page": statistics.mean(render_s),
            "text_layer_over_ocr": statistics.mean(layer_s) / statistics.mean(ocr_s),
            "text_layer_and_render_over_ocr_and_render": (statistics.mean(layer_s) + statistics.mean(render_s))
            / (statistics.mean(ocr_s) + statistics.mean(render_s)),
            "predict_pages_per_s": end_to_end}


def base_model_folder(folder: Path) -> Path:
    """A random-weight LayoutLMv3 token classifier of the base size, as an aetnet model folder."""
    import torch
    import transformers

    from aetnet.data.encoding.processor import load_processor
    from aetnet.inference.modelio import save_model
    from aetnet.models.tiny import ensure_tiny_base

    torch.manual_seed(0)
    config = transformers.LayoutLMv3Config(num_labels=len(FUNSD_LABELS), max_position_embeddings=514,
                                           id2label=dict(enumerate(FUNSD_LABELS)),
                                           label2id={c: i for i, c in enumerate(FUNSD_LABELS)})
    model = transformers.LayoutLMv3ForTokenClassification(config).eval()
    processor = load_processor(str(ensure_tiny_base() / "layoutlmv3"))  # tokenizer ids < vocab size
    processor.image_processor.size = {"height": 224, "width": 224}
    save_model(model, processor, folder, {
        "task": "funsd", "kind": "token", "strategy": "full", "labels": FUNSD_LABELS, "box_level": "word",
        "max_length": 512, "stride": 128, "base": "random base-size LayoutLMv3 (benchmark only)",
        "ocr": {"engine": "tesseract", "lang": "eng", "psm": 3}})
    return folder


def model_section(pages: list, scratch: Path, repeats: int) -> dict:
    """Per backend: wall seconds per page (best of ``repeats`` passes, backends interleaved so that
    load from other processes hits them alike) and process CPU seconds per page (median of passes;
    all threads counted, which a busy machine disturbs less than wall time)."""
    from PIL import Image

    from aetnet.export.folder import export_model
    from aetnet.predict.predictor import Predictor

    start = time.perf_counter()
    export = export_model(base_model_folder(scratch / "base-model"), scratch / "base-export", onnx=True,
                          quantize=True)
    export_s = time.perf_counter() - start
    images = [Image.open(p).convert("RGB") for p, _, _ in pages]
    backends = ("torch", "onnx", "onnx-int8")
    predictors = {b: Predictor(export, backend=b) for b in backends}
    walls: dict[str, list[float]] = {b: [] for b in backends}
    cpus: dict[str, list[float]] = {b: [] for b in backends}
    windows = {}
    for b in backends:  # warm-up
        predictors[b].predict_words(images[0], pages[0][1], pages[0][2])
    for r in range(repeats):
        for b in backends[r % 3:] + backends[:r % 3]:
            wall, cpu = time.perf_counter(), time.process_time()
            windows[b] = sum(predictors[b].predict_words(image, words, boxes)["windows"]
                             for image, (_, words, boxes) in zip(images, pages))
            walls[b].append((time.perf_counter() - wall) / len(pages))
            cpus[b].append((time.process_time() - cpu) / len(pages))
    rows = {b: {"s_per_page": min(walls[b]), "cpu_s_per_page": statistics.median(cpus[b]),
                "pages_per_s": 1 / min(walls[b]), "windows": windows[b]} for b in backends}
    for b in backends:
        rows[b]["speedup_vs_torch"] = rows["torch"]["s_per_page"] / rows[b]["s_per_page"]
        rows[b]["cpu_speedup_vs_torch"] = rows["torch"]["cpu_s_per_page"] / rows[b]["cpu_s_per_page"]
    sizes = {name: (export / name).stat().st_size / 2**20 for name in ("model.onnx", "model.int8.onnx")}
    return {"pages": len(pages), "repeats": repeats, "export_s": export_s, "onnx_mb": sizes, "rows": rows}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes, ctype: str) -> float:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        resp.read()
        assert resp.status == 200
    return time.perf_counter() - start


def service_section(model_dir: str, pdfs: list[Path], requests: int, scratch: Path) -> dict:
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(scratch))
    log = open(scratch / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "aetnet", "serve", model_dir, "--port", str(port),
                             "--max-queue", "64"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        boundary = "benchmark-boundary"
        head = "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{n}\"\r\n\r\n"
        bodies = [head.format(b=boundary, n=p.name).encode() + p.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
                  for p in pdfs]
        ctype = f"multipart/form-data; boundary={boundary}"
        for body in bodies:  # warm-up
            _post(f"{base}/predict", body, ctype)
        levels = {}
        for clients in (1, 4, 16):
            before = json.loads(urllib.request.urlopen(f"{base}/health").read())["batching"]
            jobs = [bodies[i % len(bodies)] for i in range(requests)]
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                latencies = sorted(pool.map(lambda b: _post(f"{base}/predict", b, ctype), jobs))
            wall = time.perf_counter() - start
            after = json.loads(urllib.request.urlopen(f"{base}/health").read())["batching"]
            calls = after["model_calls"] - before["model_calls"]
            levels[clients] = {"requests_per_s": requests / wall, "p50_s": latencies[len(latencies) // 2],
                               "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
                               "pages_per_model_call": (after["pages"] - before["pages"]) / max(calls, 1)}
        levels["throughput_16_over_1"] = levels[16]["requests_per_s"] / levels[1]["requests_per_s"]
        return levels
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def report(figures: dict) -> None:
    import torch

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    if "words" in figures:
        w = figures["words"]
        print(f"\n[words] {w['pages']} born-digital PDF pages made from FUNSD test pages")
        print(f"  Tesseract {w['ocr_s_per_page']:.3f} s/page ({w['ocr_cpu_s_per_page']:.3f} CPU s), "
              f"text layer {w['text_layer_s_per_page']:.4f} s/page "
              f"({100 * w['text_layer_over_ocr']:.2f} % of OCR); rendering {w['render_s_per_page']:.3f} s/page; "
              f"with rendering {100 * w['text_layer_and_render_over_ocr_and_render']:.1f} %")
        for mode, row in w["predict_pages_per_s"].items():
            print(f"  predict --ocr {mode:<7} {row['pages_per_s']:.2f} pages/s (sources: {', '.join(row['sources'])})")
    if "model" in figures:
        m = figures["model"]
        print(f"\n[model] random base-size LayoutLMv3, {m['pages']} FUNSD pages, export + quantise "
              f"{m['export_s']:.0f} s, model.onnx {m['onnx_mb']['model.onnx']:.0f} MB, "
              f"model.int8.onnx {m['onnx_mb']['model.int8.onnx']:.0f} MB")
        print(f"  {'backend':<10}{'wall s/page':>12}{'pages/s':>9}{'CPU s/page':>11}{'windows':>9}"
              f"{'vs torch (wall, CPU)':>22}")
        for name, r in m["rows"].items():
            print(f"  {name:<10}{r['s_per_page']:>12.2f}{r['pages_per_s']:>9.3f}{r['cpu_s_per_page']:>11.2f}"
                  f"{r['windows']:>9}{r['speedup_vs_torch']:>13.2f}x, {r['cpu_speedup_vs_torch']:.2f}x")
    if "service" in figures:
        s = figures["service"]
        print("\n[service] aetnet serve (tiny model), born-digital PDFs")
        print(f"  {'clients':<8}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}{'pages/call':>12}")
        for clients in (1, 4, 16):
            r = s[clients]
            print(f"  {clients:<8}{r['requests_per_s']:>8.2f}{r['p50_s']:>8.3f}{r['p95_s']:>8.3f}"
                  f"{r['pages_per_model_call']:>12.2f}")
        print(f"  throughput 16 clients / 1 client: {s['throughput_16_over_1']:.2f}x")


def main() -> None:
    from aetnet.train.runner import finetune

    args = parse_args()
    sections = set(args.sections.split(","))
    scratch = Path(tempfile.mkdtemp(prefix="aetnet-speed-"))
    figures: dict = {}
    try:
        pages = funsd_pages(Path(args.funsd), max(args.max_pages, args.model_pages))
        pdfs = [text_pdf(img, words, boxes, scratch / f"{img.stem}.pdf") for img, words, boxes in pages]
        pdfs = pdfs[:args.max_pages]
        tiny = None
        if sections & {"words", "service"}:
            tiny = str(finetune("funsd", base="tiny", demo=True, output=scratch / "run", overrides=TINY_BUDGET)
                       / "model")
        if "words" in sections:
            figures["words"] = words_section(pdfs, tiny, scratch)
        if "model" in sections:
            figures["model"] = model_section(pages[:args.model_pages], scratch, args.repeats)
        if "service" in sections:
            figures["service"] = service_section(tiny, pdfs, args.requests, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
