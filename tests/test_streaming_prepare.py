"""Streaming preparation: a 500-page RVL-CDIP-format split (8 chunks of 64) goes from the OCR cache to the window cache
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

PAGES = 500  # with CHUNK = 64 (see chunked): 8 chunks, as 2,000 pages make with the real 256
BAD = (7, 400)  # corrupt image files (not in the OCR cache): skipped, listed once


@pytest.fixture()
def own_cache(tmp_path, monkeypatch, tiny_base):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / tiny_base.name).symlink_to(tiny_base)  # the session's tiny base, fresh OCR and window caches
    monkeypatch.setenv("AETNET_CACHE", str(cache))
    return cache


@pytest.fixture()
def chunked(monkeypatch):
    """Chunks of 64 examples: PAGES make as many chunks as four times as many pages with the real size."""
    monkeypatch.setattr(window_store, "CHUNK", 64)
    assert -(-PAGES // window_store.CHUNK) < window_store.PARALLEL_CHUNKS  # built in this process, as before


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


def test_five_hundred_pages_stream_through_one_chunk(tmp_path, own_cache, chunked, monkeypatch):
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.tasks.rvl_cdip import list_rvl_cdip, ocr_pages
    from aetnet.train import runner

    data = _rvl_folder(tmp_path / "rvl", own_cache)
    cfg = resolve_config({}, {"task": "rvl-cdip", "model": {"base": "tiny"}, "data": {"path": str(data)}},
                         ["data.max_length=64", "data.stride=16", "data.ocr_workers=1", "data.on_bad_document=skip"])
    parts = runner.resolve_components(cfg)
    live = LiveDocuments(monkeypatch)
    run_data = runner.load_data(cfg, parts.task)
    assert live.most <= 2  # the scan: one page at a time
    training = runner.encode_training(cfg, parts, run_data)
    run_data = run_data.without_training_examples()
    # scan + fingerprint-free build: every page read twice, never more than one chunk alive
    assert live.made == 2 * (PAGES - len(BAD))  # the scan, then the build
    assert live.most <= window_build.chunk_bound(1) == window_store.CHUNK < PAGES // 4
    assert live.alive == 0  # no training document is held after preparation
    assert training.documents == PAGES - len(BAD) == len(training.dataset.documents)
    # once, in page order
    assert [r["id"] for r in run_data.bad_documents.records] == [f"images/p{i:05d}.png" for i in BAD]
    assert run_data.bad_documents.summary(runner.used_counts(cfg, run_data, training))["documents_given"] == PAGES + 4

    # the same windows as today's list encoding of the same pages
    listed = ocr_pages(list_rvl_cdip(data, splits=["train"])["train"], cache_dir=own_cache / "ocr",
                       policy=BadDocuments("skip"))
    expected = parts.task.encode(listed, parts.processor.tokenizer, run_data.label2id, cfg)
    assert len(training.windows) == len(expected) == PAGES - len(BAD)
    assert list(training.windows) == expected
    assert [p.image_path for p in training.dataset.documents] == [str(d.image_path) for d in listed]

    # a second run reads the entry (one pass over the pages: the scan), encodes nothing
    parts2 = runner.resolve_components(cfg)
    before = live.made
    run_data2 = runner.load_data(cfg, parts2.task)
    training2 = runner.encode_training(cfg, parts2, run_data2)
    assert training2.windows.folder == training.windows.folder
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
        window_store.encode_cached(task.window_encoder(), docs, tokenizer, label2id, cfg)
    assert not list(window_store.window_cache_dir().glob("*/meta.json"))  # no entry: it was not finished
    calls.clear()
    task.encode = lambda examples, *args: (calls.append([d.id for d in examples]), real(examples, *args))[1]
    store = window_store.encode_cached(task.window_encoder(), docs, tokenizer, label2id, cfg)
    assert calls == [[d.id for d in docs[i: i + 2]] for i in range(4, len(docs), 2)]  # chunks 0 and 1 kept
    assert list(store) == expected
    assert json.loads((store.folder / "meta.json").read_text())["documents"] == len(docs)
    assert not list(store.folder.parent.glob(".*.partial"))  # the partial chunks are gone once joined


class LiveByIds:
    """Counts the CORD Documents made by the reader that are still alive, per id, as events in order."""

    def __init__(self, monkeypatch):
        from aetnet.tasks import cord

        self.events: list[tuple[int, str]] = []
        real = cord.cord_document

        def counted(gt, doc_id, *args, **kwargs):
            doc = real(gt, doc_id, *args, **kwargs)
            self.events.append((1, doc_id))
            weakref.finalize(doc, self.events.append, (-1, doc_id))
            return doc

        monkeypatch.setattr(cord, "cord_document", counted)

    def most_alive(self, ids: set[str]) -> tuple[int, int]:
        """(the most Documents of ``ids`` alive at once, how many are alive now)."""
        alive = most = 0
        for step, doc_id in self.events:
            if doc_id in ids:
                alive += step
                most = max(most, alive)
        return most, alive


def test_five_hundred_cord_files_stream_through_one_chunk(shared_data, tmp_path, own_cache, chunked,
                                                          monkeypatch):
    """A second reader: 500 real CORD annotation files in one json/ folder (the 20 samples, linked 25
    times each under new names), carved 80/20, through the runner's stages: the training documents are
    never held more than a chunk at a time, and the windows are those of today's list reading."""
    import dataclasses
    import gc

    from aetnet.data.documents.splits import map_splits
    from aetnet.tasks.cord import EVAL_SPLITS, read_cord
    from aetnet.train import runner

    samples = sorted((shared_data / "cord" / "json").glob("*.json"))
    json_dir = tmp_path / "cord" / "json"
    json_dir.mkdir(parents=True)
    for i in range(PAGES):
        (json_dir / f"receipt_{i:05d}.json").symlink_to(samples[i % len(samples)])
    cfg = resolve_config({}, {"task": "cord", "model": {"base": "tiny"}, "data": {"path": str(json_dir.parent)}},
                         ["data.max_length=64", "data.stride=16", "data.max_eval_documents=8"])
    parts = runner.resolve_components(cfg)

    # today's lists, read first (and dropped before the run reads); a receipt's windows are today's encoding
    # of its sample file (the copies differ only in name), numbered by its place in the training split
    listed = map_splits(read_cord(json_dir.parent, cfg.data.eval_fraction, cfg.train.seed), EVAL_SPLITS,
                        cfg.data.eval_fraction, cfg.train.seed, "CORD")
    train_order = [d.id for d in listed["train"]]
    train_ids = set(train_order)
    assert len(train_ids) == PAGES - PAGES // 5
    expected_eval = [d.id for d in listed["eval"][:8]]
    del listed
    gc.collect()
    label2id = {label: i for i, label in enumerate(parts.task.label_list())}
    per_sample = [parts.task.encode(read_cord(_one(tmp_path / f"s{k}", f), 0.0, 0)["train"], parts.processor.tokenizer,
                                  label2id, cfg) for k, f in enumerate(samples)]
    expected = [dataclasses.replace(w, doc_index=index) for index, doc_id in enumerate(train_order)
                for w in per_sample[int(doc_id[len("receipt_"):]) % len(samples)]]

    live = LiveByIds(monkeypatch)
    data = runner.load_data(cfg, parts.task)
    most_read, _ = live.most_alive(train_ids)
    assert most_read <= 2  # listing, label check and scan: one file at a time
    training = runner.encode_training(cfg, parts, data)
    data = data.without_training_examples()
    gc.collect()
    most, alive = live.most_alive(train_ids)
    assert most <= window_build.chunk_bound(1) == window_store.CHUNK < PAGES // 4
    assert alive == 0  # no training document is held after preparation
    # every training file read four times: listed, label-checked, scanned, encoded
    assert sum(1 for step, i in live.events if step == 1 and i in train_ids) == 4 * len(train_ids)
    assert training.documents == len(train_ids)
    assert [d.id for d in data.eval] == expected_eval
    assert len(training.windows) == len(expected) > len(train_ids)  # several windows per receipt at 64 tokens
    assert list(training.windows) == expected


def _one(folder, sample):
    """A CORD json/ folder holding only ``sample``."""
    (folder / "json").mkdir(parents=True)
    (folder / "json" / sample.name).symlink_to(sample)
    return folder


def test_pages_file_streams_its_training_pages(tmp_path, own_cache, monkeypatch):
    """A third reader: a single pages.jsonl (token task, carved 80/20) with a broken line and a page id used
    twice, read in chunks of 64: at most a chunk of training pages alive, today's windows and today's
    skipped.jsonl lines."""
    import gc

    from aetnet.data.documents import pages
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.data.documents.splits import map_splits
    from aetnet.tasks.generic import EVAL_SPLITS, bio_label_list
    from aetnet.train import runner

    n = 600
    lines = []
    for i in range(n):
        words = [f"w{i}", "total", f"{i % 97}.00", "paid"][: 2 + i % 3]
        labels = ["B-KEY", "I-KEY", "B-VALUE", "O"][: len(words)]
        boxes = [[10 + 30 * k, 10, 35 + 30 * k, 30] for k in range(len(words))]
        lines.append(json.dumps({"id": f"p{i:04d}", "width": 200, "height": 100, "words": words, "boxes": boxes,
                                 "labels": labels}))
    lines[10] = "{not json"
    lines[20] = lines[21]  # p0021 twice: the second is skipped
    data = tmp_path / "pages.jsonl"
    data.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(window_store, "CHUNK", 64)
    cfg = resolve_config({}, {"task": "token", "model": {"base": "tiny"}, "data": {"path": str(data)}},
                         ["data.max_length=32", "data.stride=8", "data.on_bad_document=skip"])

    # today's lists
    policy = BadDocuments("skip")
    listed = map_splits({"train": pages.read_pages(data, "token", policy)["all"]}, EVAL_SPLITS,
                        cfg.data.eval_fraction, cfg.train.seed, str(data))
    train_ids = {d.id for d in listed["train"]}
    label2id = {label: i for i, label in enumerate(bio_label_list(["KEY", "VALUE"]))}
    parts = runner.resolve_components(cfg)
    expected = parts.task.encode(listed["train"], parts.processor.tokenizer, label2id, cfg)
    expected_eval = [d.id for d in listed["eval"]]
    expected_skipped = [(r["split"], r["id"]) for r in policy.records]
    del listed
    gc.collect()

    events: list[tuple[int, str]] = []
    real = pages.parse_page

    def counted(record, *args, **kwargs):
        doc = real(record, *args, **kwargs)
        events.append((1, doc.id))
        weakref.finalize(doc, events.append, (-1, doc.id))
        return doc

    monkeypatch.setattr(pages, "parse_page", counted)
    data = runner.load_data(cfg, parts.task)
    training = runner.encode_training(cfg, parts, data)
    data = data.without_training_examples()
    gc.collect()
    alive = most = 0
    for step, doc_id in events:
        if doc_id in train_ids:
            alive += step
            most = max(most, alive)
    assert most <= window_build.chunk_bound(1) == 64 < len(train_ids) // 6
    assert alive == 0
    assert data.label2id == label2id
    assert training.documents == len(train_ids) == n - 2 - round(0.2 * (n - 2))
    assert [d.id for d in data.eval] == expected_eval
    skipped = [(r["split"], r["id"]) for r in data.bad_documents.records]
    assert skipped == expected_skipped == [("all", None), ("all", "p0021")]
    assert list(training.windows) == expected


def test_funsd_release_folder_streams_its_training_forms(shared_data, tiny_base, tmp_path, monkeypatch):
    """FUNSD's release layout: training is a DocumentStream of the same forms (and windows) as the lists;
    the test forms stay a list."""
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.data.documents.stream import DocumentStream
    from aetnet.data.encoding.processor import load_processor
    from aetnet.inference.modelio import get_task
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    tokenizer = load_processor(tiny_base / "layoutlmv3").tokenizer
    task = get_task("funsd")
    task.bad_documents = BadDocuments("error")
    cfg = resolve_config({}, {"task": "funsd", "data": {"path": str(shared_data / "funsd"), "max_length": 128,
                                                        "stride": 32}}, [])
    splits = task.load(cfg)
    listed = read_funsd_folder(find_funsd_root(shared_data / "funsd"))
    assert isinstance(splits["train"], DocumentStream) and isinstance(splits["eval"], list)
    assert [d.id for d in splits["train"]] == [d.id for d in listed["train"]]
    assert [d.id for d in splits["eval"]] == [d.id for d in listed["eval"]]
    label2id = {label: i for i, label in enumerate(task.label_list())}
    assert task.encode(list(splits["train"]), tokenizer, label2id, cfg) == task.encode(listed["train"], tokenizer,
                                                                                       label2id, cfg)


def _docvqa_folder(root, pages: int):
    """An official-layout DocVQA folder: ``train/`` (1-3 questions a page, a page's questions apart once, a
    broken entry) and ``val/``, each with its official OCR files (no images: blank pages of the OCR's size)."""
    folder = root / "docvqa"
    for split, first, n in (("train", 0, pages), ("val", pages, 6)):
        ocr = folder / split / "ocr_results"
        ocr.mkdir(parents=True)
        entries = []
        for i in range(first, first + n):
            words = [f"w{i}", "total", f"{i % 97}.00", "paid", "date", f"{i % 28 + 1}/03"]
            lines = [{"words": [{"text": w, "boundingBox": [10 + 40 * k, 10, 45 + 40 * k, 10, 45 + 40 * k, 30,
                                                             10 + 40 * k, 30]} for k, w in enumerate(words)]}]
            (ocr / f"p{i:05d}.json").write_text(json.dumps(
                {"recognitionResults": [{"width": 400, "height": 100, "lines": lines}]}))
            for q in range(1 + i % 3):
                entries.append({"questionId": i * 4 + q, "question": f"what is word {q}?", "docId": i,
                                "image": f"documents/p{i:05d}.png", "answers": [words[(2 * q + i) % 6]]})
        if split == "train":
            entries.append(dict(entries[0], questionId=99999, question="page 0 again?"))  # page 0 read again
            entries.insert(5, {"questionId": 99998, "image": "documents/p00001.png"})  # no question: skipped
        (folder / split / f"{split}_v1.0.json").write_text(json.dumps({"dataset_split": split, "data": entries}))
    return folder


def test_docvqa_training_questions_stream_one_page_at_a_time(tmp_path, own_cache, monkeypatch):
    """DocVQA's official layout: the training questions stream in the file's order, a page read once for its
    consecutive questions and at most a chunk of questions' pages alive; today's windows, questions and
    skipped.jsonl lines."""
    import gc

    from aetnet.data.documents.screen import BadDocuments
    from aetnet.data.documents.stream import DocumentStream
    from aetnet.tasks import docvqa
    from aetnet.train import runner

    pages = 300
    folder = _docvqa_folder(tmp_path, pages)
    monkeypatch.setattr(window_store, "CHUNK", 64)
    cfg = resolve_config({}, {"task": "docvqa", "model": {"base": "tiny"}, "data": {"path": str(folder)},
                              "train": {"eval_strategy": "no"}},
                         ["data.max_length=32", "data.stride=8", "data.on_bad_document=skip"])
    parts = runner.resolve_components(cfg)

    # today's list (read_docvqa)
    policy = BadDocuments("skip")
    listed = docvqa.read_docvqa(folder / "train" / "train_v1.0.json", policy=policy)["train"]
    expected = parts.task.encode(listed, parts.processor.tokenizer, None, cfg)
    expected_questions = [(ex.id, ex.question, ex.answer_span, ex.document.id) for ex in listed]
    expected_skipped = [(r["split"], r["id"]) for r in policy.records]
    assert len(listed) == sum(1 + i % 3 for i in range(pages)) + 1
    del listed
    gc.collect()

    events: list[tuple[int, str]] = []
    real = docvqa._page_document

    def counted(*args, **kwargs):
        doc = real(*args, **kwargs)
        events.append((1, doc.id))
        weakref.finalize(doc, events.append, (-1, doc.id))
        return doc

    monkeypatch.setattr(docvqa, "_page_document", counted)
    data = runner.load_data(cfg, parts.task)
    assert isinstance(data.train, DocumentStream)
    assert [(ex.id, ex.question, ex.answer_span, ex.document.id) for ex in data.train] == expected_questions
    training = runner.encode_training(cfg, parts, data)
    data = data.without_training_examples()
    gc.collect()
    alive = most = 0
    for step, doc_id in events:
        if int(doc_id[1:]) < pages:
            alive += step
            most = max(most, alive)
    # at most a chunk of questions' pages (a chunk holds 64 questions, about 32 pages here), none at the end
    assert most <= window_build.chunk_bound(1) == 64 < pages // 4
    assert alive == 0
    assert training.documents == len(expected_questions)
    assert [r["id"] for r in data.bad_documents.records] == [i for _, i in expected_skipped] == ["99998"]
    assert list(training.windows) == expected
