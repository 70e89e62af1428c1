"""Preparation at full size: peak RSS and speed of the process that prepares an RVL-CDIP-shaped split.

Builds N synthetic pages shaped like RVL-CDIP OCR pages (about 300 words each with their boxes, one of
the 16 classes, a distinct image file per page held by reference: one encoded PNG with a text chunk
naming the page, so no PIL encode per page), fills the OCR cache with their
words (so no time goes to Tesseract), then runs the real preparation path of ``aetnet finetune`` (the
runner's ``resolve_components``, ``load_data`` and ``encode_training`` stages: listing, OCR cache, the
streamed training split, the window cache build) in a fresh process for the first N/10 pages and for all
N, and prints each process's peak RSS, the slope per page between them and pages per second.

``--shape docvqa`` builds the same pages as a DocVQA folder instead (``train/train_v1.0.json`` with one to
four questions a page, whose answers are words of the page, and the official OCR files in
``train/ocr_results/``, so no time goes to Tesseract) and prepares the ``docvqa`` task.

    python benchmarks/prepare_scale.py --pages 20000
    python benchmarks/prepare_scale.py --pages 4000 --shape docvqa
    python benchmarks/prepare_scale.py --pages 100000 --work /tmp/prep --keep   # record in benchmarks/README.md
    python benchmarks/prepare_scale.py --pages 2000 --baseline b22c36a   # pages/s against an earlier commit

``--baseline REV`` measures speed instead: the same N pages prepared by the code of commit ``REV`` (its
``aetnet``, ``tasks`` and ``recipes`` extracted with ``git archive``) and by the working tree, each in a fresh
process with a window cache of its own (the OCR cache shared), cold then warm, alternating, and prints the
ratios of their pages per second.

Target (issue 24): a slope of at most 1 KiB per page between N/10 and N.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

WORDS = 300
VOCAB = ("the of and to in for is on that by this with from at as be are date total page report memo letter "
         "invoice form budget file email news science resume question advertisement scientific presentation "
         "specification handwritten publication questionnaire company tobacco research sample").split()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=20000, help="N: pages of the training split")
    p.add_argument("--words", type=int, default=WORDS, help="words per page")
    p.add_argument("--shape", choices=("rvl-cdip", "docvqa"), default="rvl-cdip",
                   help="rvl-cdip: a class per page; docvqa: 1-4 questions a page")
    p.add_argument("--work", help="folder for the pages and caches (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--baseline", metavar="REV", help="compare pages/s on N pages with the code of commit REV")
    # the measured child
    p.add_argument("--prepare", nargs=3, metavar=("DATA", "CACHE", "TASK"), help=argparse.SUPPRESS)
    p.add_argument("--components-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def page_image(template: bytes, i: int) -> bytes:
    """Page ``i``'s PNG: the shared ``template`` (754 x 1000) with a ``tEXt`` chunk naming the page inserted
    after the header, so every page is a distinct file (the OCR cache key is the file's bytes) without a
    PIL encode per page."""
    body = b"tEXt" + b"page\0" + str(i).encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    end_of_header = 8 + 25  # PNG signature, then IHDR (length, type, 13 bytes, CRC)
    return template[:end_of_header] + chunk + template[end_of_header:]


def build_pages(root: Path, cache: Path, pages: int, words: int) -> dict[str, Path]:
    """``images/``, the OCR cache entry of every page, and label folders for N/10 and N training pages.

    One PNG is encoded; each page's file is that template with its own text chunk, and its OCR cache
    entry is written directly under the key the reader computes (``_cache_key`` of the file's bytes)."""
    from PIL import Image

    from aetnet.data.ocr.tesseract import OcrSettings, _cache_key, tesseract_version

    settings = OcrSettings()
    version = tesseract_version()
    fields = {"settings": settings.as_dict(), "tesseract": version, "format": 1}
    width, height = 754, 1000  # RVL-CDIP pages are about 754 x 1000 pixels
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    template = buffer.getvalue()
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    made = set()
    for i in range(pages + 8):
        folder = f"images/{i // 1000:04d}"
        name = f"{folder}/p{i:07d}.png"
        path = root / name
        if not path.is_file():
            if folder not in made:
                (root / folder).mkdir(exist_ok=True)
                made.add(folder)
            content = page_image(template, i)
            path.write_bytes(content)
            key = _cache_key(content, settings, version)
            entry = cache / "ocr" / key[:2] / f"{key}.json"
            if entry.parent.name not in made:
                entry.parent.mkdir(parents=True, exist_ok=True)
                made.add(entry.parent.name)
            entry.write_text(ocr_record(i % len(VOCAB), words, width, height, json.dumps(fields)[1:-1]))
        lines.append(f"{name} {i % 16}")
    folders = {}
    for label, n in (("tenth", pages // 10), ("full", pages)):
        folder = root / label / "labels"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder.parent / "images").exists():
            (folder.parent / "images").symlink_to(root / "images")  # labels/ beside images/, as released
        (folder / "train.txt").write_text("\n".join(lines[:n]) + "\n")
        (folder / "test.txt").write_text("\n".join(lines[pages: pages + 8]) + "\n")
        folders[label] = folder
    return folders


@functools.lru_cache(maxsize=len(VOCAB))
def ocr_record(i: int, words: int, width: int, height: int, fields: str) -> str:
    """The OCR cache entry (JSON text) of page ``i`` (pages whose numbers agree modulo the vocabulary have the
    same words, so the text is made once per residue)."""
    rows, boxes = page_words(i, words)
    return json.dumps({"words": rows, "boxes": boxes, "size": [width, height]})[:-1] + ", " + fields + "}"


def page_words(i: int, words: int) -> tuple[list[str], list[list[int]]]:
    """Page ``i``'s words and pixel boxes (12 words a line on a 754 x 1000 page)."""
    rows = [f"{VOCAB[(i + k) % len(VOCAB)]}{k % 7 or ''}" for k in range(words)]
    boxes = [[40 + (k % 12) * 55, 40 + (k // 12) * 36, 90 + (k % 12) * 55, 66 + (k // 12) * 36] for k in range(words)]
    return rows, boxes


def build_docvqa(root: Path, pages: int, words: int) -> dict[str, Path]:
    """The same pages as DocVQA folders for N/10 and N training pages (1-4 questions a page, answers taken
    from the page's words), the official OCR files (Microsoft Read format) shared, and 8 ``val`` pages."""
    ocr = root / "ocr_results"
    ocr.mkdir(exist_ok=True)
    entries = []
    for i in range(pages + 8):
        stem = f"p{i:07d}"
        ocr_file = ocr / f"{stem}.json"
        rows, boxes = page_words(i, words)
        if not ocr_file.is_file():
            lines = [{"words": [{"text": w, "boundingBox": [b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]}
                                for w, b in zip(rows[k: k + 12], boxes[k: k + 12])]} for k in range(0, words, 12)]
            ocr_file.write_text(json.dumps({"recognitionResults": [{"width": 754, "height": 1000, "lines": lines}]}))
        for q in range(1 + i % 4):
            answer = rows[(7 * q + i) % words]
            entries.append({"questionId": i * 4 + q, "question": f"what is word {(7 * q + i) % words}?",
                            "image": f"documents/{i // 1000:04d}/{stem}.png", "docId": i, "answers": [answer]})
    folders = {}
    for label, n in (("tenth", pages // 10), ("full", pages)):
        folder = root / f"docvqa-{label}"
        for split, chosen in (("train", [e for e in entries if e["docId"] < n]),
                              ("val", [e for e in entries if e["docId"] >= pages])):
            (folder / split).mkdir(parents=True, exist_ok=True)
            (folder / split / f"{split}_v1.0.json").write_text(json.dumps({"dataset_split": split, "data": chosen}))
            for name, target in (("ocr_results", ocr), ("documents", root / "images")):
                if not (folder / split / name).exists():
                    (folder / split / name).symlink_to(target)
        folders[label] = folder
    return folders


def prepare(data: str, cache: str, task: str, components_only: bool = False) -> None:
    """The measured child: the runner's preparation stages, then its peak RSS and times as one JSON line
    (``components_only``: the stage before reading alone, which builds what a first run builds once)."""
    import resource

    os.environ["AETNET_CACHE"] = cache
    from aetnet.config.settings import resolve_config
    from aetnet.train import runner

    cfg = resolve_config({}, {"task": task, "model": {"base": "tiny"}, "data": {"path": data}},
                         ["data.ocr_workers=1", "train.num_workers=0"])
    parts = runner.resolve_components(cfg)
    if components_only:
        return
    ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    data = runner.load_data(cfg, parts.task)
    loaded = time.perf_counter()
    training = runner.encode_training(cfg, parts, data)
    done = time.perf_counter()
    print(json.dumps({"examples": training.documents, "windows": len(training.windows),
                      "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "before_data_kib": ready,
                      "load_seconds": round(loaded - start, 2), "encode_seconds": round(done - loaded, 2)}))


def measure(folder: Path, cache: Path, task: str, code: Path | None = None, components_only: bool = False) -> dict:
    """The measured child's figures; ``code``: a folder holding another ``aetnet`` package to import instead."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if code is not None:
        env["PYTHONPATH"] = str(code)  # (its sitecustomize drops the editable install's finder)
    command = [sys.executable, __file__, "--prepare", str(folder), str(cache), task]
    proc = subprocess.run(command + ["--components-only"] * components_only, env=env, capture_output=True,
                          text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"preparation failed:\n{proc.stderr[-3000:]}")
    if components_only:
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extract(rev: str, into: Path) -> Path:
    """The ``aetnet`` package of commit ``rev`` under ``into`` (``tasks`` and ``recipes`` placed inside it, as
    installed), with a ``sitecustomize`` that removes an editable install's finder so that it is imported."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", rev, "aetnet", "tasks", "recipes"], cwd=repo, capture_output=True,
                             check=True).stdout
    import tarfile

    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    for name in ("tasks", "recipes"):
        (into / name).rename(into / "aetnet" / name)
    (into / "sitecustomize.py").write_text(
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n")
    return into


def compare(args, work: Path, cache: Path, folder: Path) -> None:
    """Pages per second of commit ``args.baseline`` and of the working tree on the same pages, in one run."""
    code = extract(args.baseline, work / f"code-{args.baseline}")
    measure(folder, cache, args.shape, components_only=True)  # (what a first run builds once)
    rows = {}
    for state in ("cold", "warm"):
        for name, path in ((args.baseline, code), ("working tree", None)):
            own = work / f"cache-{'base' if path else 'tree'}"
            own.mkdir(exist_ok=True)
            if not (own / "ocr").exists():
                (own / "ocr").symlink_to(cache / "ocr")  # the OCR cache shared, the window cache each its own
            row = measure(folder, own, args.shape, path)
            seconds = row["load_seconds"] + row["encode_seconds"]
            rows[name, state] = row["pages_per_second"] = round(args.pages / seconds, 1)
            print(f"{name:>12}, window cache {state}: read {row['load_seconds']} s + encode {row['encode_seconds']} s "
                  f"= {row['pages_per_second']} pages/s, peak RSS {row['peak_rss_kib'] / 1024:,.1f} MiB, "
                  f"{row['windows']:,} windows")
    for state in ("cold", "warm"):
        print(f"speed-up, window cache {state}: {rows['working tree', state] / rows[args.baseline, state]:.2f}x")


def main() -> None:
    args = parse_args()
    if args.prepare:
        prepare(*args.prepare, components_only=args.components_only)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="prepare-scale-"))
    cache = work / "cache"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    print(f"# prepare_scale: {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    folders = build_pages(work, cache, args.pages, args.words)
    if args.shape == "docvqa":
        folders = build_docvqa(work, args.pages, args.words)
    print(f"built {args.pages:,} pages of {args.words} words ({args.shape}: images + OCR) in "
          f"{time.perf_counter() - t0:.0f} s")
    if args.baseline:
        compare(args, work, cache, folders["full"])
        if not args.keep and not args.work:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        return
    out = {"pages": args.pages, "words": args.words, "shape": args.shape}
    # A first process builds what later ones read (the tiny base, its tokenizer) and starts reading about
    # 13 MiB higher: done once beforehand, so that every measured process starts from the same state.
    measure(folders["tenth"], cache, args.shape, components_only=True)
    for label in ("tenth", "full"):
        for state in ("cold", "warm"):  # cold: the window cache is built; warm: it is read
            row = measure(folders[label], cache, args.shape)
            row["pages"] = args.pages // 10 if label == "tenth" else args.pages  # (examples: pages, or questions)
            seconds = row["load_seconds"] + row["encode_seconds"]
            row["pages_per_second"] = round(row["pages"] / seconds, 1)
            out[f"{label}_{state}"] = row
            print(f"{row['pages']:>8,} pages ({row['examples']:,} examples, {row['windows']:,} windows), window "
                  f"cache {state}: peak RSS {row['peak_rss_kib'] / 1024:,.1f} MiB "
                  f"(before reading {row['before_data_kib'] / 1024:,.1f} MiB), read {row['load_seconds']} s + "
                  f"encode {row['encode_seconds']} s = {row['pages_per_second']} pages/s")
    span = out["full_cold"]["pages"] - out["tenth_cold"]["pages"]
    for state in ("cold", "warm"):
        slope = (out[f"full_{state}"]["peak_rss_kib"] - out[f"tenth_{state}"]["peak_rss_kib"]) / span
        out[f"slope_kib_per_page_{state}"] = round(slope, 3)
        print(f"peak RSS slope, window cache {state}: {slope:.3f} KiB per page (target <= 1)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if not args.keep and not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
