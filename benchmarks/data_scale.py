"""Benchmark-scale data costs, measured in one run (issues 12 and 24), in four sections:

1. ``memory``: resident bytes per encoded window (Python lists vs the memory-mapped window cache) and
   the peak RSS of a one-step ``finetune cord`` run (tiny model) against the number of training
   documents (CORD-format receipts from the demo generator), with the window cache read back (a
   second run) and with ``data.window_cache=false``; the slope is bytes of peak RSS per document.
2. ``ocr``: OCR pages per second on the same RVL-CDIP-format pages with 1 worker and with N
   workers, each from a cold cache.
3. ``loader``: DataLoader items per second with 0 and N workers, for full fine-tuning and for AET
   (which adds the I+ view per item), and the wait for an epoch's first batch with the N workers
   started again every epoch vs kept across epochs (persistent, as training does).
4. ``real`` (not in the default sections): the real CORD annotation files copied to 800 and 3,200
   documents in one ``json/`` folder and ``finetune cord --base tiny train.max_steps=1
   data.max_eval_documents=8``, cold and warm window cache: peak RSS growth per training document.

    python benchmarks/data_scale.py                                  # all sections, default sizes
    python benchmarks/data_scale.py --docs 1000,4000,16000 --workers 8 --json figures.json
    python benchmarks/data_scale.py --sections real --real-docs 800,3200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="memory,ocr,loader",
                   help="memory,ocr,loader and/or real (the real CORD annotation files copied to --real-docs)")
    p.add_argument("--real-docs", default="800,3200", help="real: documents in one json/ folder (80%% train)")
    p.add_argument("--cord-samples",
                   help="real: the folder of real CORD annotation files, holding json/ (default: tests/data/cord)")
    p.add_argument("--docs", default="250,1000,4000", help="training document counts for the memory section")
    p.add_argument("--pool", type=int, default=1000,
                   help="memory: receipts generated; larger training sets link to them in turn (generation is slow)")
    p.add_argument("--ocr-pages", type=int, default=16)
    p.add_argument("--loader-items", type=int, default=96)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N (default: every core)")
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args()


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def window_bytes(cord: Path, n: int) -> dict[str, float]:
    """Python heap per window of the in-memory encoding vs of a WindowStore over the same windows."""
    from aetnet.config.settings import resolve_config
    from aetnet.data.encoding.processor import load_processor
    from aetnet.data.encoding.store import WindowStore, encode_cached
    from aetnet.inference.modelio import get_task
    from aetnet.models.tiny import resolve_base

    cfg = resolve_config({}, {"task": "cord", "data": {"path": str(cord)}}, [f"data.max_train_documents={n}"])
    task = get_task("cord")
    tracemalloc.start()
    splits = task.load(cfg)
    loaded = tracemalloc.get_traced_memory()[0]  # the Document objects (words, boxes, labels, segments)
    tracemalloc.stop()
    read = sum(len(docs) for docs in splits.values())
    docs = splits["train"][:n]
    tokenizer = load_processor(resolve_base("tiny")[0]).tokenizer
    label2id = {label: i for i, label in enumerate(task.label_list())}
    tracemalloc.start()
    windows = task.encode(docs, tokenizer, label2id, cfg)
    in_memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    os.environ["AETNET_CACHE"] = str(cord.parent / "window-bytes-cache")
    folder = encode_cached(task.window_encoder(), docs, tokenizer, label2id, cfg).folder
    tracemalloc.start()
    store = WindowStore(folder)
    count = len(store)  # opens the memory-mapped table
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"windows": len(windows), "python_bytes_per_window": round(in_memory / len(windows)),
            "document_bytes": round(loaded / read),
            "words_per_document": round(sum(len(d) for d in docs) / len(docs), 1),
            "store_bytes_per_window": round(held / max(1, count)),
            "tokens_per_window": round(sum(len(w.input_ids) for w in windows) / len(windows), 1)}


def _linked_receipts(pool: Path, root: Path, n: int, generated: int) -> Path:
    """A CORD folder of ``n`` training receipts (and the pool's 4 test receipts) linking to ``pool``'s."""
    for split, count, sources in (("train", n, generated), ("test", 4, 4)):
        for sub, suffix in (("json", "json"), ("image", "png")):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (root / split / sub / f"receipt_{i:05d}.{suffix}").symlink_to(
                    pool / split / sub / f"receipt_{i % sources:05d}.{suffix}")
    return root


def memory_section(sizes: list[int], work: Path, pool: int) -> dict:
    from aetnet.data.demo import make_cord_demo

    t0 = time.perf_counter()
    generated = min(max(sizes), pool)
    make_cord_demo(work / "pool", n_train=generated, n_test=4)
    print(f"[memory] generated {generated} CORD-format receipts in {time.perf_counter() - t0:.0f} s; each training "
          f"set of N receipts links to them in turn (N files read, each run reads exactly its N)")
    folders = {n: _linked_receipts(work / "pool", work / f"cord-{n}", n, generated) for n in sizes}
    cord = folders[min(sizes)]
    out: dict = {"per_window": window_bytes(cord, min(sizes))}
    print(f"[memory] per window (tiny tokenizer, {out['per_window']['tokens_per_window']} tokens): "
          f"{out['per_window']['python_bytes_per_window']} B as Python lists, "
          f"{out['per_window']['store_bytes_per_window']} B of Python heap with the window cache; a document "
          f"({out['per_window']['words_per_document']} words) holds {out['per_window']['document_bytes']} B as read")
    env = dict(os.environ, AETNET_CACHE=str(work / "cache"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    base = [sys.executable, "-m", "aetnet", "finetune", "cord", "--base", "tiny",
            "train.max_steps=1", "train.batch_size=2", "data.max_eval_documents=2", "train.save_steps=100",
            "train.num_workers=0"]
    rows = []
    for n in sizes:
        row = {"documents": n}
        for label, extra in (("cache_cold", []), ("cache_warm", []), ("no_cache", ["data.window_cache=false"])):
            run = work / f"run-{n}-{label}"
            t0 = time.perf_counter()
            _run([*base, "--data", str(folders[n]), "--output", str(run), *extra], env)
            metrics = json.loads((run / "metrics.json").read_text())
            row[label] = {"peak_rss_mb": metrics["peak_memory_mb"], "seconds": round(time.perf_counter() - t0, 1)}
        row["windows"] = metrics["train_windows"]
        rows.append(row)
        print(f"[memory] {n:6d} docs ({row['windows']} windows): peak RSS "
              f"{row['no_cache']['peak_rss_mb']:.0f} MB in memory, {row['cache_cold']['peak_rss_mb']:.0f} MB "
              f"building the cache ({row['cache_cold']['seconds']} s), {row['cache_warm']['peak_rss_mb']:.0f} MB "
              f"reading it ({row['cache_warm']['seconds']} s)")
    if len(rows) > 1:
        span = rows[-1]["documents"] - rows[0]["documents"]
        for label in ("no_cache", "cache_warm"):
            slope = (rows[-1][label]["peak_rss_mb"] - rows[0][label]["peak_rss_mb"]) * 2**20 / span
            out[f"{label}_bytes_per_document"] = round(slope)
            print(f"[memory] peak RSS slope ({label}): {slope / 1024:.1f} KiB per training document")
    out["runs"] = rows
    return out


def _cord_samples(given: str | None) -> Path:
    repo = Path(__file__).resolve().parents[1]
    for candidate in (given, repo / "tests" / "data" / "cord"):
        if candidate and (Path(candidate) / "json").is_dir():
            return Path(candidate) / "json"
    raise SystemExit("no real CORD samples found; pass --cord-samples FOLDER (holding json/)")


def real_cord_section(sizes: list[int], work: Path, samples: str | None) -> dict:
    """The issue-24 case: real CORD annotation files copied to N documents in one ``json/`` folder, and
    ``aetnet finetune cord --base tiny train.max_steps=1 data.max_eval_documents=8`` run as a new user would
    (the flat folder is carved 80/20), cold and warm window cache, default and 0 DataLoader workers."""
    import shutil

    files = sorted(_cord_samples(samples).glob("*.json"))
    env = dict(os.environ, AETNET_CACHE=str(work / "real-cache"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    _run([sys.executable, "-c", "from aetnet.models.tiny import ensure_tiny_base; ensure_tiny_base()"], env)
    rows = []
    for n in sizes:
        folder = work / f"real-cord-{n}" / "json"
        folder.mkdir(parents=True)
        for i in range(n):
            shutil.copyfile(files[i % len(files)], folder / f"receipt_{i:05d}.json")
        shutil.rmtree(work / "real-cache" / "windows", ignore_errors=True)
        row: dict = {"documents": n}
        for label, extra in (("cold", []), ("warm", []), ("warm_workers_0", ["train.num_workers=0"])):
            run = work / f"real-run-{n}-{label}"
            cmd = [sys.executable, "-m", "aetnet", "finetune", "cord", "--base", "tiny", "--data", str(folder.parent),
                   "--output", str(run), "train.max_steps=1", "data.max_eval_documents=8", *extra]
            _run(cmd, env)
            metrics = json.loads((run / "metrics.json").read_text())
            row[label] = metrics["peak_memory_mb"]
            row["train_documents"] = metrics["train_documents"]
        rows.append(row)
        print(f"[real] {n} real CORD files ({row['train_documents']} training): peak RSS cold {row['cold']:.0f} MB, "
              f"warm {row['warm']:.0f} MB, warm with 0 workers {row['warm_workers_0']:.0f} MB")
    out: dict = {"runs": rows}
    if len(rows) > 1:
        span = rows[-1]["train_documents"] - rows[0]["train_documents"]
        for label in ("cold", "warm", "warm_workers_0"):
            slope = (rows[-1][label] - rows[0][label]) * 1024 / span
            out[f"{label}_kib_per_training_document"] = round(slope, 2)
            print(f"[real] peak RSS growth ({label}): {slope:.1f} KiB per training document (target <= 8)")
    return out


def _burn(_: int) -> float:
    """A fixed amount of pure-Python CPU work; returns its wall time."""
    t0, total = time.perf_counter(), 0
    for i in range(20_000_000):
        total += i
    return time.perf_counter() - t0


def parallel_capacity(workers: int) -> float:
    """How many times one process's CPU work this machine does with ``workers`` processes at once.

    ``workers`` on a machine with that many free cores; less on shared or hyper-threaded vCPUs. The OCR
    pool cannot beat it, so its speed-up is also printed as a share of it.
    """
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_burn, range(workers))  # start-up and imports out of the timing
        one = min(pool.map(_burn, [0]) + pool.map(_burn, [0]))
        t0 = time.perf_counter()
        pool.map(_burn, range(workers), chunksize=1)
        together = time.perf_counter() - t0
    return workers * one / together


def ocr_section(pages: int, workers: int, work: Path) -> dict:
    from aetnet.data.demo import make_rvl_cdip_demo
    from aetnet.data.ocr.pool import ocr_many
    from aetnet.tasks.rvl_cdip import list_rvl_cdip

    per_class = max(1, pages // 4)
    data = make_rvl_cdip_demo(work / "rvl", n_per_class=per_class, n_eval_per_class=0)
    files = [e.image_path for e in list_rvl_cdip(data)["train"]][:pages]
    out = {"pages": len(files)}
    for n in (1, workers):
        t0 = time.perf_counter()
        results = ocr_many(files, cache_dir=work / f"ocr-cache-{n}", workers=n)
        seconds = time.perf_counter() - t0
        assert all(not r.cached for r in results)
        out[f"pages_per_s_{n}"] = round(len(files) / seconds, 3)
        print(f"[ocr] {len(files)} pages, {n} worker(s), cold cache: {len(files) / seconds:.2f} pages/s")
    out["speedup"] = round(out[f"pages_per_s_{workers}"] / out["pages_per_s_1"], 2)
    out["cpu_capacity"] = round(parallel_capacity(workers), 2)
    out["share_of_capacity"] = round(out["speedup"] / out["cpu_capacity"], 2)
    print(f"[ocr] speed-up with {workers} workers: {out['speedup']}x (target >= {0.8 * workers:.1f}x on "
          f"{workers} free cores)")
    print(f"[ocr] this machine runs {workers} CPU-bound processes at {out['cpu_capacity']}x one process; the pool "
          f"reaches {out['share_of_capacity']:.0%} of that (0.8 x N on N free cores is 80 %)")
    return out


def loader_section(items: int, workers: int, work: Path) -> dict:
    import torch

    from aetnet.config.settings import resolve_config
    from aetnet.data.encoding.processor import load_processor
    from aetnet.data.encoding.windows import Collator, WindowDataset
    from aetnet.inference.modelio import get_strategy, get_task
    from aetnet.models.tiny import resolve_base

    os.environ["AETNET_CACHE"] = str(work / "loader-cache")
    out = {}
    base = resolve_base("tiny")[0]
    processor = load_processor(base)
    # Base-size images: LayoutLMv3's 224x224 input (the tiny model's processor is resized to it).
    processor.image_processor.size = {"height": 224, "width": 224}
    task = get_task("cord")
    for strategy_name in ("full", "aet"):
        cfg = resolve_config({}, {"task": "cord", "strategy": strategy_name}, [])
        docs = task.load(cfg, demo=True)["train"]
        label2id = {label: i for i, label in enumerate(task.label_list())}
        windows = task.encode(docs, processor.tokenizer, label2id, cfg)
        views = get_strategy(strategy_name).extra_views(cfg, processor)
        dataset = WindowDataset(windows, docs, processor.image_processor, views)
        subset = torch.utils.data.Subset(dataset, [i % len(dataset) for i in range(items)])
        for n in (0, workers):
            loader = torch.utils.data.DataLoader(subset, batch_size=8, num_workers=n,
                                                 collate_fn=Collator(processor.tokenizer.pad_token_id))
            t0 = time.perf_counter()
            count = sum(len(batch["input_ids"]) for batch in loader)
            rate = count / (time.perf_counter() - t0)
            out[f"{strategy_name}_items_per_s_{n}"] = round(rate, 1)
            print(f"[loader] {strategy_name:4s} {n} worker(s): {rate:.1f} items/s ({1000 / rate:.1f} ms an item)")
        if workers > 0:
            out.update(epoch_restart(subset, workers, Collator(processor.tokenizer.pad_token_id), strategy_name))
    return out


def epoch_restart(dataset, workers: int, collate, name: str, epochs: int = 4) -> dict:
    """Seconds to the first batch of epochs 2.. with workers started per epoch vs kept (persistent)."""
    import torch

    out = {}
    for persistent in (False, True):
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate,
                                             persistent_workers=persistent)
        waits = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            batches = iter(loader)
            next(batches)
            waits.append(time.perf_counter() - t0)
            for _ in batches:
                pass
        out[f"{name}_first_batch_s_{'persistent' if persistent else 'restarted'}"] = round(
            sum(waits[1:]) / (epochs - 1), 3)
    restarted, kept = out[f"{name}_first_batch_s_restarted"], out[f"{name}_first_batch_s_persistent"]
    print(f"[loader] {name:4s} {workers} worker(s), first batch of a later epoch: {restarted:.3f} s restarted, "
          f"{kept:.3f} s persistent ({restarted / kept:.2f}x)")
    return out


def main() -> None:
    args = parse_args()
    sections = args.sections.split(",")
    figures: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()}, "workers": args.workers}
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}; N = {args.workers} workers")
    with tempfile.TemporaryDirectory(prefix="aetnet-data-scale-") as tmp:
        work = Path(tmp)
        if "memory" in sections:
            figures["memory"] = memory_section([int(n) for n in args.docs.split(",")], work, args.pool)
        if "real" in sections:
            figures["real"] = real_cord_section([int(n) for n in args.real_docs.split(",")], work, args.cord_samples)
        if "ocr" in sections:
            figures["ocr"] = ocr_section(args.ocr_pages, args.workers, work)
        if "loader" in sections:
            figures["loader"] = loader_section(args.loader_items, args.workers, work)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
