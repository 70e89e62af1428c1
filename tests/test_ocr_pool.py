"""OCR in a process pool: `aetnet ocr` killed and restarted recognises no finished page twice, shards
are disjoint and complete, results and bad pages do not depend on the worker count, and
save_to_disk pages stay undecoded in memory.

Tesseract runs are counted by a wrapper script put first on PATH (not by the code under test): it
runs the real binary and, when a recognition succeeds, appends the SHA-256 of the page image it was
given to a log file.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from aetnet.data.demo import make_rvl_cdip_demo
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.ocr.pool import PageOcr, ocr_many, parse_shard, shard
from aetnet.data.ocr.tesseract import OcrSettings
from aetnet.errors import AetnetError, DataError
from aetnet.tasks.rvl_cdip import list_rvl_cdip, ocr_pages

WRAPPER = """#!/bin/sh
"{real}" "$@"
rc=$?
case "$1" in
  --version|--list-langs|-v) ;;
  *) if [ $rc -eq 0 ]; then sha256sum "$1" | cut -c1-64 >> "{log}"; fi ;;
esac
exit $rc
"""


@pytest.fixture
def counted(tmp_path, monkeypatch) -> Path:
    """PATH with the counting wrapper first; returns the log file (one line per recognised page)."""
    real = shutil.which("tesseract")
    assert real, "tesseract is not installed"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tesseract.log"
    log.touch()
    script = bin_dir / "tesseract"
    script.write_text(WRAPPER.format(real=real, log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def _lines(log: Path) -> list[str]:
    return log.read_text().split()


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    """12 RVL-CDIP-format pages (4 classes x (1 train + 1 val + 1 test))."""
    return make_rvl_cdip_demo(tmp_path_factory.mktemp("rvl"), n_per_class=1, n_eval_per_class=1)


def _ocr_cli(data: Path, cache: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, AETNET_CACHE=str(cache))
    return subprocess.Popen([sys.executable, "-m", "aetnet", "ocr", "rvl-cdip", "--data", str(data), "--json", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_killed_run_restarted_recognises_no_finished_page_twice(pages, tmp_path, counted, capsys, monkeypatch):
    from aetnet.cli.main import main

    cache = tmp_path / "cache"
    proc = _ocr_cli(pages, cache, "--workers", "2")
    deadline = time.time() + 120
    while len(_lines(counted)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its pool workers, mid-way
    proc.communicate()
    cached_after_kill = len(list((cache / "ocr").rglob("*.json")))
    first = _lines(counted)
    assert 0 < cached_after_kill < 12

    # the restart in this process (only the killed run needs a process of its own)
    monkeypatch.setenv("AETNET_CACHE", str(cache))
    capsys.readouterr()
    assert main(["ocr", "rvl-cdip", "--data", str(pages), "--json", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    second = _lines(counted)[len(first):]
    # Exactly the pages without a cache file were recognised again; none of the finished ones.
    assert len(second) == 12 - cached_after_kill
    assert len(set(first) | set(second)) == 12
    assert len(list((cache / "ocr").rglob("*.json"))) == 12
    summary = json.loads(out)
    assert (summary["pages"], summary["recognised"], summary["cached"]) == (12, 12 - cached_after_kill,
                                                                            cached_after_kill)


def test_two_shards_cover_every_page_exactly_once(pages, tmp_path, counted, capsys, monkeypatch):
    from aetnet.cli.main import main

    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    summaries = []
    for spec, workers in (("0/2", "2"), ("1/2", "1")):
        assert main(["ocr", "rvl-cdip", "--data", str(pages), "--shard", spec, "--workers", workers, "--json"]) == 0
        summaries.append(json.loads(capsys.readouterr().out))
    assert [s["pages"] for s in summaries] == [6, 6]
    hashes = _lines(counted)
    assert len(hashes) == 12 and len(set(hashes)) == 12
    # A full pass afterwards finds everything cached.
    assert main(["ocr", "rvl-cdip", "--data", str(pages), "--workers", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recognised"] == 0
    assert len(_lines(counted)) == 12


def test_shard_arithmetic_and_bad_specs():
    items = list(range(10))
    parts = [shard(items, i, 3) for i in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x/2", "1", "-1/2"):
        with pytest.raises(AetnetError, match="shard"):
            parse_shard(bad)


def test_results_and_bad_pages_do_not_depend_on_worker_count(pages, tmp_path):
    listed = list_rvl_cdip(pages)["val"]  # 4 pages
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not really a tiff")
    sources = [listed[0].image_path, broken, listed[1].image_path]
    serial = ocr_many(sources, cache_dir=tmp_path / "c1", workers=1)
    pooled = ocr_many(sources, cache_dir=tmp_path / "c2", workers=2)
    for one, two in zip(serial, pooled):
        assert type(one) is type(two)
    assert isinstance(pooled[1], DataError) and str(broken) in str(pooled[1]) and pooled[1].field == "image"
    assert [(r.words, r.boxes) for r in (serial[0], serial[2])] == [(r.words, r.boxes) for r in (pooled[0], pooled[2])]
    assert isinstance(pooled[0], PageOcr) and pooled[0].words

    # Through the reader with --on-bad-document skip: same documents, same record, listing order.
    entries = list(listed)
    entries.insert(2, type(entries[0])("broken.tif", 0, "labels/val.txt", image_file=str(broken)))
    outcomes = []
    for workers in (1, 2):
        policy = BadDocuments("skip")
        docs = ocr_pages(entries, OcrSettings(), tmp_path / "c3", policy=policy, split="val", workers=workers)
        outcomes.append(([(d.id, d.words) for d in docs], policy.records))
    assert outcomes[0] == outcomes[1]
    assert [d for d, _ in outcomes[0][0]] == [e.doc_id for e in entries if e.doc_id != "broken.tif"]
    assert [r["id"] for r in outcomes[0][1]] == ["broken.tif"]
    with pytest.raises(DataError, match="broken.tif"):
        ocr_pages(entries, OcrSettings(), tmp_path / "c3", policy=BadDocuments("error"), workers=2)


def _save_rows(images: list[bytes], labels: list[int], folder: Path) -> Path:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": b, "path": None} for b in images], "label": labels}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(folder))
    return folder


def test_dataset_rows_share_the_file_cache_key_and_stay_undecoded(pages, tmp_path, counted):
    listed = list_rvl_cdip(pages)["test"]
    cache = tmp_path / "cache"
    from_files = ocr_pages(listed, cache_dir=cache, workers=1)
    assert len(_lines(counted)) == 4
    hf = _save_rows([e.image_path.read_bytes() for e in listed], [e.label for e in listed], tmp_path / "hf")
    rows = list_rvl_cdip(hf)["train"]
    docs = ocr_pages(rows, cache_dir=cache, workers=2)
    assert len(_lines(counted)) == 4  # the encoded bytes are the file's: every row is a cache hit
    assert [d.words for d in docs] == [d.words for d in from_files]
    assert [d.page_size for d in docs] == [d.page_size for d in from_files]
    assert all(d.image is None and d.image_ref is not None for d in docs)
    gc.collect()
    sizes = {d.page_size for d in docs}
    assert not [o for o in gc.get_objects() if isinstance(o, Image.Image) and o.size in sizes]  # no page decoded
    for doc, ref in zip(docs, from_files):
        assert doc.load_image().tobytes() == ref.load_image().tobytes()


BOUNDED = """
import resource, sys
from aetnet.data.ocr.tesseract import OcrSettings
from aetnet.tasks.rvl_cdip import list_rvl_cdip, ocr_pages
rows = list_rvl_cdip(sys.argv[1])["train"]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
docs = ocr_pages(rows, OcrSettings(), sys.argv[2], workers=1)
for doc in docs:  # every page decoded once, as a DataLoader worker would
    doc.load_image()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(docs), (after - before) * 1024)
"""


def test_save_to_disk_pages_read_with_bounded_memory(tmp_path):
    """300 pages of 1000x1000 (300 MB of decoded pixels): peak RSS grows by far less than that."""
    import io

    buf = io.BytesIO()
    Image.new("L", (1000, 1000), 255).save(buf, format="PNG")
    # One blank page stored 300 times: one Tesseract run fills the cache, every row is still its own
    # stored image, decoded on its own.
    hf = _save_rows([buf.getvalue()] * 300, [i % 16 for i in range(300)], tmp_path / "hf")
    proc = subprocess.run([sys.executable, "-c", BOUNDED, str(hf), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, grown = (int(v) for v in proc.stdout.split()[-2:])
    assert count == 300
    assert grown < 60 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB for 300 MB of pages"


def test_docvqa_pages_without_ocr_files_recognised_in_the_pool(tmp_path, counted, capsys, monkeypatch):
    """`aetnet ocr docvqa` recognises exactly the pages that lack an official OCR file; the reader then
    finds them cached and reads the same words as a serial read."""
    from aetnet.cli.main import main
    from aetnet.data.demo import make_docvqa_demo
    from aetnet.tasks.docvqa import read_docvqa

    data = make_docvqa_demo(tmp_path / "docvqa", n_pages=6)
    removed = sorted(data.glob("ocr_results/*.json"))[:3]
    for f in removed:
        f.unlink()
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    assert main(["ocr", "docvqa", "--data", str(data), "--workers", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["pages"], summary["recognised"]) == (3, 3)
    assert len(_lines(counted)) == 3
    files = sorted(data.glob("*_v1.0.json"))
    pooled = {f.name: read_docvqa(f, cache_dir=tmp_path / "cache" / "ocr", workers=2) for f in files}
    assert len(_lines(counted)) == 3  # everything came from the cache
    serial = {f.name: read_docvqa(f, cache_dir=tmp_path / "serial", workers=1) for f in files}
    for name in pooled:
        for split in pooled[name]:
            assert [(e.id, e.document.words, e.answer_span) for e in pooled[name][split]] == \
                [(e.id, e.document.words, e.answer_span) for e in serial[name][split]]
    tesseract_pages = {e.document.id for name in pooled for s in pooled[name].values() for e in s
                       if e.document.meta.get("ocr") == "tesseract"}
    assert tesseract_pages == {f.stem for f in removed}


def test_own_pages_without_words_recognised_in_the_pool(tmp_path, counted, capsys, monkeypatch):
    """Own pages (pages.jsonl) without words: `aetnet ocr classify` recognises exactly those, and a
    pooled read (data.ocr_workers=2) gives the serial read's words with no further Tesseract run."""
    from aetnet.cli.main import main
    from aetnet.config.settings import resolve_config
    from aetnet.inference.modelio import get_task

    lines = []
    for i, text in enumerate(["INVOICE 4711", "RECEIPT TOTAL 12", "INVOICE DATE MAY", "RECEIPT 99"]):
        img = Image.new("L", (500, 120), 255)
        ImageDraw.Draw(img).text((20, 40), text, fill=0, font=ImageFont.load_default(size=32))
        img.save(tmp_path / f"p{i}.png")
        line = {"id": f"p{i}", "image": f"p{i}.png", "class": "invoice" if "INVOICE" in text else "receipt"}
        if i == 3:  # a page with its own words: never OCRed
            line.update(words=["RECEIPT", "99"], boxes=[[20, 40, 150, 80], [160, 40, 200, 80]])
        lines.append(json.dumps(line))
    pages = tmp_path / "pages.jsonl"
    pages.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    assert main(["ocr", "classify", "--data", str(pages), "--workers", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recognised"] == 3
    assert len(_lines(counted)) == 3

    def words(workers: int) -> list:
        cfg = resolve_config({}, {"task": "classify", "data": {"path": str(pages)}}, [f"data.ocr_workers={workers}"])
        splits = get_task("classify").load(cfg)
        return sorted((d.id, d.words) for docs in splits.values() for d in docs)

    pooled = words(2)
    assert len(_lines(counted)) == 3  # every OCR page was cached
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "serial"))
    assert words(1) == pooled and len(pooled) == 4
    assert dict(pooled)["p0"][0] == "INVOICE"


def test_no_process_pool_when_every_page_is_cached(pages, tmp_path, monkeypatch):
    """A second run (or a rank waiting for the main process) reads the cache without starting a pool."""
    import aetnet.data.ocr.pool as pool

    files = [e.image_path for e in list_rvl_cdip(pages)["test"]]
    first = ocr_many(files, cache_dir=tmp_path, workers=2)

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started for cached pages")

    monkeypatch.setattr(pool.multiprocessing, "get_context", no_pool)
    again = ocr_many(files, cache_dir=tmp_path, workers=2)
    assert [(r.words, r.boxes) for r in again] == [(r.words, r.boxes) for r in first]
    assert all(r.cached for r in again)


def test_ocr_command_bad_page_error_names_it_and_skip_lists_it(tmp_path, capsys, monkeypatch):
    from aetnet.cli.main import main

    (tmp_path / "images").mkdir()
    Image.new("L", (60, 40), 255).save(tmp_path / "images" / "good.png")
    (tmp_path / "images" / "broken.tif").write_bytes(b"II*\x00 truncated")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "train.txt").write_text("images/good.png 0\nimages/broken.tif 1\n")
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    assert main(["ocr", "rvl-cdip", "--data", str(tmp_path), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "broken.tif" in err and "cannot be decoded" in err and "Traceback" not in err
    assert main(["ocr", "rvl-cdip", "--data", str(tmp_path), "--workers", "2", "--json",
                 "data.on_bad_document=skip"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [b["id"] for b in summary["bad"]] == ["train/images/broken.tif"]
    assert summary["cached"] == 1  # the good page was recognised by the first (failed) run already
