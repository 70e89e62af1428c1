"""Streaming preparation: a 2,000-page RVL-CDIP-format split goes from the OCR cache to the window cache
through the runner's own stages holding at most one chunk of documents (counted, live), with the same
windows as the list encoding, bad pages recorded once in page order; a killed window build resumes
without encoding its finished chunks again."""

from __future__ import annotations

import json
import weakref

import pytest
from PIL import Image

from aetnet.config.settings import resolve_config
from aetnet.data.encoding import build as window_build
from aetnet.data.encoding import store as window_store
from aetnet.data.ocr.tesseract import OcrSettings, _cache_file, _write_cache

PAGES = 2000
BAD = (7, 1500)  # corrupt image files (not in the OCR cache): skipped, listed once


@pytest.fixture()
def own_cache(tmp_path, monkeypatch, tiny_base):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / tiny_base.name).symlink_to(tiny_base)  # the session's tiny base, fresh OCR and window caches
    monkeypatch.setenv("AETNET_CACHE", str(cache))
    return cache


def _rvl_folder(root, cache, pages: int = PAGES):
    """``labels/{train,test}.txt`` and one small distinct PNG per page, whose OCR is put in the cache."""
    (root / "images").mkdir(parents=True)
    settings = OcrSettings()
    lines = {"train": [], "test": []}
    for i in range(pages + 4):
        name = f"images/p{i:05d}.png"
        split = "train" if i < pages else "test"
        if split == "train" and i in BAD:
            (root / name).write_bytes(b"not an image")
        else:
            Image.new("L", (64, 80), color=i % 251).save(root / name)
            path, version = _cache_file((root / name).read_bytes(), settings, cache / "ocr")
            words = [f"w{i}-{k}" for k in range(1 + i % 17)]
            boxes = [[2 + k, 3, 10 + k, 9] for k in range(len(words))]
            _write_cache(path, {"words": words, "boxes": boxes, "settings": settings.as_dict(), "tesseract": version,
                                "size": [64, 80], "format": 1})
        lines[split].append(f"{name} {i % 16}")
    (root / "labels").mkdir()
    for split, rows in lines.items():
        (root / "labels" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


class LiveDocuments:
    """Counts the training Documents the RVL-CDIP reader made that are still alive, and the most at any time."""

    def __init__(self, monkeypatch):
        from aetnet.tasks import rvl_cdip

        self.alive = self.made = self.most = 0
        real = rvl_cdip._page_document

        def counted(*args, **kwargs):
            doc = real(*args, **kwargs)
            if int(doc.id[len("images/p"):][:5]) >= PAGES:
                return doc  # an evaluation page
            weakref.finalize(doc, self._freed)  # (Documents compare by value: no WeakSet)
            self.made += 1
            self.alive += 1
            self.most = max(self.most, self.alive)
            return doc

        monkeypatch.setattr(rvl_cdip, "_page_document", counted)

    def _freed(self) -> None:
        self.alive -= 1


def test_two_thousand_pages_stream_through_one_chunk(tmp_path, own_cache, monkeypatch):
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.tasks.rvl_cdip import list_rvl_cdip, ocr_pages
    from aetnet.train import runner

    data = _rvl_folder(tmp_path / "rvl", own_cache)
    cfg = resolve_config({}, {"task": "rvl-cdip", "model": {"base": "tiny"}, "data": {"path": str(data)}},
                         ["data.max_length=64", "data.stride=16", "data.ocr_workers=1", "data.on_bad_document=skip"])
    ctx = runner.RunContext(cfg)
    runner.resolve_components(ctx)
    live = LiveDocuments(monkeypatch)
    runner.load_data(ctx)
    assert live.most <= 2  # the scan: one page at a time
    runner.encode_training(ctx)
    # scan + fingerprint-free build: every page read twice, never more than one chunk alive
    assert live.made == 2 * (PAGES - len(BAD))  # the scan, then the build
    assert live.most <= window_build.chunk_bound(1) == window_store.CHUNK < PAGES // 4
    assert live.alive == 0  # no training document is held after preparation
    assert ctx.train_documents == PAGES - len(BAD) == len(ctx.train_ds.documents)
    assert [r["id"] for r in ctx.policy.records] == [f"images/p{i:05d}.png" for i in BAD]  # once, page order
    assert ctx.policy.summary(runner.used_counts(ctx))["documents_given"] == PAGES + 4

    # the same windows as today's list encoding of the same pages
    listed = ocr_pages(list_rvl_cdip(data, splits=["train"])["train"], cache_dir=own_cache / "ocr",
                       policy=BadDocuments("skip"))
    expected = ctx.task.encode(listed, ctx.processor.tokenizer, ctx.label2id, cfg)
    assert len(ctx.train_windows) == len(expected) == PAGES - len(BAD)
    assert list(ctx.train_windows) == expected
    assert [p.image_path for p in ctx.train_ds.documents] == [str(d.image_path) for d in listed]

    # a second run reads the entry (one pass over the pages: the scan), encodes nothing
    ctx2 = runner.RunContext(cfg)
    runner.resolve_components(ctx2)
    before = live.made
    runner.load_data(ctx2)
    runner.encode_training(ctx2)
    assert ctx2.train_windows.folder == ctx.train_windows.folder
    assert live.made - before == PAGES - len(BAD)


class Killed(Exception):
    pass


def test_killed_build_resumes_without_encoding_finished_chunks(shared_data, tiny_base, tmp_path, monkeypatch):
    from aetnet.data.encoding.processor import load_processor
    from aetnet.inference.modelio import get_task
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(window_store, "CHUNK", 2)
    tokenizer = load_processor(tiny_base / "layoutlmv3").tokenizer
    splits = read_funsd_folder(find_funsd_root(shared_data / "funsd"))
    docs = splits["train"] + splits["eval"]  # -> chunks of 2
    chunks = -(-len(docs) // 2)
    assert chunks >= 3
    task = get_task("funsd")
    label2id = {label: i for i, label in enumerate(task.label_list(splits))}
    cfg = resolve_config({}, {"task": "funsd", "data": {"max_length": 128, "stride": 32}}, [])
    expected = task.encode(docs, tokenizer, label2id, cfg)
    real, calls = task.encode, []

    def dies_at_third(examples, *args):
        calls.append([d.id for d in examples])
        if len(calls) == 3:
            raise Killed
        return real(examples, *args)

    task.encode = dies_at_third
    with pytest.raises(Killed):
        window_store.encode_cached(task, docs, tokenizer, label2id, cfg)
    assert not list(window_store.window_cache_dir().glob("*/meta.json"))  # no entry: it was not finished
    calls.clear()
    task.encode = lambda examples, *args: (calls.append([d.id for d in examples]), real(examples, *args))[1]
    store = window_store.encode_cached(task, docs, tokenizer, label2id, cfg)
    assert calls == [[d.id for d in docs[i: i + 2]] for i in range(4, len(docs), 2)]  # chunks 0 and 1 kept
    assert list(store) == expected
    assert json.loads((store.folder / "meta.json").read_text())["documents"] == len(docs)
    assert not list(store.folder.parent.glob(".*.partial"))  # the partial chunks are gone once joined
