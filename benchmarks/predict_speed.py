"""Prediction speed on CPU: OCR time and model time per page, and pages per second over a folder,
with the model in float32 and bfloat16.

    python benchmarks/predict_speed.py                      # trains a tiny FUNSD run first (--base tiny)
    python benchmarks/predict_speed.py --model runs/funsd-full/model --pages scans/ --max-pages 20

Columns: ``ocr s/page`` is Tesseract on an empty cache; ``model s/page`` is everything after OCR
(windows, image processing, forward, decoding) with the OCR words given; ``pages/s cold`` is
``predict_paths`` end to end with an empty OCR cache, ``pages/s cached`` the same with every page's
OCR already cached (what a second pass over a folder costs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_PAGES = Path("/work/shared/data/funsd/dataset/testing_data/images")
TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder; default: train a tiny FUNSD run on --base")
    p.add_argument("--base", default="tiny", help="base for the run trained when --model is not given")
    p.add_argument("--pages", default=str(DEFAULT_PAGES), help="folder of PNG/JPEG/TIFF/PDF pages")
    p.add_argument("--max-pages", type=int, default=4, help="pages used (the first N files)")
    p.add_argument("--question", default="What is the date?", help="question for QA models")
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p.parse_args()


def page_files(folder: str, limit: int) -> list[Path]:
    from aetnet.predict import collect_files

    files = collect_files([folder])[:limit]
    if not files:
        raise SystemExit(f"no pages in {folder}")
    return files


def measure(model_dir: str, files: list[Path], dtype: str, question: str | None, scratch: Path) -> dict:
    from aetnet.predict import Predictor, load_pages, predict_paths

    cold = scratch / f"ocr-{dtype}"
    predictor = Predictor(model_dir, dtype=dtype, ocr_cache=cold)
    question = question if predictor.kind == "qa" else None
    pages = [page for f in files for page in load_pages(f)]
    start = time.perf_counter()
    predict_paths(predictor, files, question=question)  # empty cache: OCR + model
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    predict_paths(predictor, files, question=question)  # every page's OCR now cached
    cached_s = time.perf_counter() - start
    words = [predictor.ocr(page) for page in pages]  # cache hits
    model_times = []
    for page, (w, b) in zip(pages, words):
        start = time.perf_counter()
        predictor.predict_words(page, w, b, question)
        model_times.append(time.perf_counter() - start)
    return {"dtype": dtype, "pages": len(pages), "model_s_per_page": statistics.mean(model_times),
            "pages_per_s_cold": len(pages) / cold_s, "pages_per_s_cached": len(pages) / cached_s}


def ocr_seconds(files: list[Path], scratch: Path) -> float:
    from aetnet.data.ocr import ocr_image
    from aetnet.predict import load_pages

    times = []
    for f in files:
        for page in load_pages(f):
            start = time.perf_counter()
            ocr_image(page, cache_dir=scratch / "ocr-timing")
            times.append(time.perf_counter() - start)
    return statistics.mean(times)


def main() -> None:
    import torch

    from aetnet.train.runner import finetune, load_model

    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="aetnet-speed-"))
    try:
        model_dir = args.model
        if model_dir is None:
            run = finetune("funsd", base=args.base, demo=True, output=scratch / "run", overrides=TINY_BUDGET)
            model_dir = str(run / "model")
        files = page_files(args.pages, args.max_pages)
        # Warm up once (lazy imports, allocator) so the first measured page is not penalised.
        from aetnet.predict import Predictor

        warm = Predictor(model_dir, ocr_cache=scratch / "warm")
        warm.predict_file(files[0], question=args.question if warm.kind == "qa" else None)
        ocr_s = ocr_seconds(files, scratch)
        rows = [measure(model_dir, files, dtype, args.question, scratch) for dtype in ("float32", "bfloat16")]
        params = sum(p.numel() for p in load_model(model_dir).model.parameters())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"model {model_dir} ({params:,} parameters); {rows[0]['pages']} pages from {args.pages}")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"{'dtype':<10}{'ocr s/page':>12}{'model s/page':>14}{'pages/s cold':>14}{'pages/s cached':>16}")
    for r in rows:
        print(f"{r['dtype']:<10}{ocr_s:>12.3f}{r['model_s_per_page']:>14.3f}{r['pages_per_s_cold']:>14.3f}"
              f"{r['pages_per_s_cached']:>16.3f}")
    if args.json:
        figures = {"ocr_s_per_page": ocr_s, "rows": rows, "model": model_dir}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
