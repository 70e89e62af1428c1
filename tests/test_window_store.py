"""On-disk window cache: rows equal the in-memory encoding on the real samples; fingerprint rebuilds and
reuses; a second run tokenises nothing and scores the same; the cache command."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pytest

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.store import WindowStore, encode_cached, window_cache_dir, windows_table
from aetnet.data.encoding.windows import Window, WindowDataset
from aetnet.errors import AetnetError
from aetnet.inference.modelio import get_task


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from aetnet.data.encoding.processor import load_processor

    return load_processor(tiny_base / "layoutlmv3").tokenizer


@pytest.fixture()
def own_cache(tmp_path, monkeypatch):
    """A fresh, empty window cache for one test."""
    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "windows"


def _cfg(task: str, **data):
    return resolve_config({}, {"task": task, "data": {"max_length": 128, "stride": 32, **data}}, [])


class CountingEncode:
    """Wraps a task's real ``encode`` and counts the examples given to it."""

    def __init__(self, task):
        # the class's function, not the bound method: unpickled in a worker, a bound ``task.encode`` would be this spy
        self.task, self.real, self.calls, self.examples = task, type(task).encode, 0, 0
        task.encode = self

    def __call__(self, examples, *args, **kwargs):
        self.calls += 1
        self.examples += len(examples)
        return self.real(self.task, examples, *args, **kwargs)


def _check_same(task_name, examples, tokenizer, label2id, cfg):
    task = get_task(task_name)
    expected = task.encode(examples, tokenizer, label2id, cfg)
    store = encode_cached(task.window_encoder(), examples, tokenizer, label2id, cfg)
    assert isinstance(store, WindowStore) and len(store) == len(expected) > 0
    assert list(store) == expected  # ids, boxes, word boxes, labels, word ids, positions, doc_index
    assert store[len(store) - 1] == expected[-1] and store[-1] == expected[-1]
    table = store.table
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("bbox").type == pa.list_(pa.int16())
    assert table.schema.field("word_ids").type == pa.list_(pa.int32())
    return store, expected


def test_real_funsd_token_and_relation_windows(shared_data, tokenizer, own_cache):
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    splits = read_funsd_folder(find_funsd_root(shared_data / "funsd"))
    docs = splits["train"] + splits["eval"]
    labels = get_task("funsd").label_list(splits)
    label2id = {label: i for i, label in enumerate(labels)}
    store, expected = _check_same("funsd", docs, tokenizer, label2id, _cfg("funsd"))
    assert len({w.doc_index for w in expected}) == len(docs)  # several chunks' offsets are right
    assert any(w.labels.count(-100) < len(w.labels) for w in expected)
    assert store.table.schema.field("token_labels").type == pa.list_(pa.int16())
    _check_same("funsd", docs, tokenizer, None, _cfg("funsd", box_level="word"))  # unlabelled: labels None
    re_store, re_expected = _check_same("funsd-re", docs, tokenizer, {"x": 0}, _cfg("funsd-re"))
    assert any(w.relation_labels for w in re_expected)
    _, unlabelled = _check_same("funsd-re", docs, tokenizer, None, _cfg("funsd-re"))  # inference: no targets
    assert all(w.relation_labels is None for w in unlabelled)
    item = WindowDataset(re_store, docs, lambda images, return_tensors: {"pixel_values": [[[0.0]]]})[0]
    assert item["entity_positions"].tolist() == re_expected[0].entity_positions


def test_real_cord_windows_and_chunks(shared_data, tokenizer, own_cache, monkeypatch):
    from aetnet.data.encoding import store as window_store
    from aetnet.tasks.cord import cord_label_list, read_cord

    monkeypatch.setattr(window_store, "CHUNK", 3)  # 20 pages -> 7 chunks written one after the other
    splits = read_cord(shared_data / "cord")
    docs = splits["train"] + splits["test"]
    label2id = {label: i for i, label in enumerate(cord_label_list())}
    store, expected = _check_same("cord", docs, tokenizer, label2id, _cfg("cord", max_length=64, stride=16))
    assert max(w.doc_index for w in expected) == len(docs) - 1
    assert len(expected) > len(docs)  # some pages need several windows at 64 tokens


def test_real_docvqa_qa_windows(shared_data, tokenizer, own_cache, tmp_path):
    from aetnet.tasks.docvqa import read_docvqa

    examples = read_docvqa(shared_data / "docvqa" / "val_v1.0_sample.json", cache_dir=tmp_path / "ocr")["val"]
    store, expected = _check_same("docvqa", examples, tokenizer, None, _cfg("docvqa"))
    assert any(w.start_positions for w in expected)
    assert store.table.column("start_positions").null_count == 0


def test_sequence_windows_keep_int_labels(shared_data, tokenizer, own_cache):
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"]
    for i, doc in enumerate(docs):
        doc.doc_label = ["letter", "memo"][i % 2]
    _, expected = _check_same("rvl-cdip", docs, tokenizer, {"letter": 0, "memo": 7}, _cfg("rvl-cdip"))
    assert [w.labels for w in expected] == [[0, 7][i % 2] for i in range(len(docs))]


def test_rebuilt_when_tokenizer_or_setting_changes_reused_otherwise(shared_data, tiny_base, own_cache):
    from aetnet.data.encoding.processor import load_processor
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    tokenizer = load_processor(tiny_base / "layoutlmv3").tokenizer
    splits = read_funsd_folder(find_funsd_root(shared_data / "funsd"))
    docs = splits["train"]
    label2id = {label: i for i, label in enumerate(get_task("funsd").label_list(splits))}
    task = get_task("funsd")
    spy = CountingEncode(task)

    def builds(cfg, examples=docs, tok=tokenizer, l2i=label2id):
        before = spy.calls
        encode_cached(task.window_encoder(), examples, tok, l2i, cfg)
        return spy.calls - before

    assert builds(_cfg("funsd")) == 1
    assert builds(_cfg("funsd")) == 0  # same everything: reused
    assert builds(_cfg("funsd", max_train_documents=99, on_bad_document="skip", ocr_workers=3)) == 0
    assert builds(_cfg("funsd", stride=16)) == 1
    assert builds(_cfg("funsd", box_level="word")) == 1
    assert builds(_cfg("funsd", max_length=96)) == 1
    assert builds(_cfg("funsd"), l2i={**label2id, "B-EXTRA": len(label2id)}) == 1
    assert builds(_cfg("funsd"), examples=docs[:1]) == 1  # another selection of documents
    changed = load_processor(tiny_base / "layoutlmv3").tokenizer
    changed.add_tokens(["zzyzx-new-token"])
    assert builds(_cfg("funsd"), tok=changed) == 1
    again = load_processor(tiny_base / "layoutlmv3").tokenizer  # an equal tokenizer loaded anew: reused
    assert builds(_cfg("funsd"), tok=again) == 0
    docs[0].words[0] = docs[0].words[0] + "x"  # the data changed
    assert builds(_cfg("funsd")) == 1
    assert len(list(own_cache.glob("*/meta.json"))) == 8
    assert [p.name for p in own_cache.glob(".*")] == [".locks"]  # no temporary folders left behind
    assert builds(_cfg("funsd", window_cache=False)) == 1 and builds(_cfg("funsd", window_cache=False)) == 1


def test_store_is_memory_mapped_and_pickles_by_path(shared_data, tokenizer, own_cache):
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"]
    store = encode_cached(get_task("funsd").window_encoder(), docs, tokenizer, None, _cfg("funsd"))
    fresh = WindowStore(store.folder)
    allocated = pa.total_allocated_bytes()
    rows = fresh.table
    assert rows.nbytes > 50_000 and pa.total_allocated_bytes() - allocated < rows.nbytes / 10  # mapped, not read
    assert str(store.folder).startswith(str(own_cache)) and store.folder.parent == window_cache_dir()
    import datasets

    as_dataset = datasets.Dataset.from_file(str(store.folder / "windows.arrow"))  # a datasets Arrow file
    assert as_dataset.num_rows == len(store) and as_dataset[0]["input_ids"] == store[0].input_ids
    blob = pickle.dumps(store)
    assert len(blob) < 20_000  # the path and the description, not the rows
    assert list(pickle.loads(blob)) == list(store)
    assert (store.doc_indices() == [w.doc_index for w in store]).all()


def test_unwritable_cache_is_one_clear_error(shared_data, tokenizer, tmp_path, monkeypatch):
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("AETNET_CACHE", str(blocker))
    docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"]
    with pytest.raises(AetnetError, match="cannot write the window cache in .*not-a-folder.*window_cache=false"):
        encode_cached(get_task("funsd").window_encoder(), docs, tokenizer, None, _cfg("funsd"))


@pytest.mark.parametrize("task_name", ["funsd", "docvqa", "funsd-re"])
def test_no_examples_is_an_empty_store(task_name, tokenizer, own_cache):
    store = encode_cached(get_task(task_name).window_encoder(), [], tokenizer, None, _cfg(task_name))
    assert isinstance(store, WindowStore) and len(store) == 0 and list(store) == []
    with pytest.raises(IndexError):
        store[0]


def test_values_outside_the_compact_dtypes_are_refused():
    window = Window(0, [0, 5, 2], [[0, 0, 0, 0], [1, 2, 40000, 4], [0, 0, 0, 0]], [None, 0, None])
    with pytest.raises(AetnetError, match="int16"):
        windows_table([window])


def test_second_finetune_tokenises_nothing_and_scores_the_same(tiny_base, aetnet_cache, tmp_path, monkeypatch,
                                                               capsys):
    from aetnet.cli.main import main
    from aetnet.tasks.funsd import FunsdTask
    from aetnet.train.runner import finetune

    monkeypatch.setenv("AETNET_CACHE", str(tmp_path / "cache"))
    import aetnet.models.tiny as tiny

    monkeypatch.setattr(tiny, "cache_root", lambda: aetnet_cache)  # the session's tiny base, a fresh window cache
    counts = []
    real = FunsdTask.encode

    def counting(self, examples, *args, **kwargs):
        counts.append(len(examples))
        return real(self, examples, *args, **kwargs)

    monkeypatch.setattr(FunsdTask, "encode", counting)
    budget = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=3", "data.max_eval_documents=2",
              "data.max_length=128", "data.stride=32", "model.dropout=0", "train.save_steps=100"]
    metrics = {}
    runs = (("first", None, []), ("second", None, []), ("memory", None, ["data.window_cache=false"]),
            ("lora", "lora", ["train.seed=7"]))  # another strategy and seed of a compare: same windows
    for name, strategy, extra in runs:
        counts.clear()
        run = finetune("funsd", base="tiny", demo=True, strategy=strategy, output=tmp_path / name,
                       overrides=budget + extra)
        metrics[name] = (json.loads((run / "metrics.json").read_text()), counts[:])
        metrics[name + "_pred"] = (run / "predictions.jsonl").read_text()
    assert metrics["first"][1] == [3, 2]  # training and evaluation windows built once
    assert metrics["second"][1] == []  # nothing tokenised
    assert metrics["memory"][1] == [3, 2]
    assert metrics["lora"][1] == []
    scored = ("f1", "precision", "recall", "train_loss", "train_windows", "eval_documents")
    for key in scored:
        assert metrics["first"][0][key] == metrics["second"][0][key] == metrics["memory"][0][key], key
    assert metrics["first_pred"] == metrics["second_pred"] == metrics["memory_pred"]

    capsys.readouterr()
    assert main(["cache", "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(e["documents"] for e in listed) == [2, 3] and all(e["task"] == "funsd" for e in listed)
    assert main(["cache", "ls"]) == 0 and "2 entries" in capsys.readouterr().out
    entries = list((tmp_path / "cache" / "windows").glob("*/meta.json"))
    assert len(entries) == 2
    key = entries[0].parent.name
    assert main(["cache", "clear", key[:10]]) == 0
    assert len(list((tmp_path / "cache" / "windows").glob("*/meta.json"))) == 1
    assert main(["cache", "clear", "nosuchkey"]) == 2
    assert main(["cache", "clear"]) == 0
    assert not list((tmp_path / "cache" / "windows").glob("*/meta.json"))


def test_concurrent_builders_encode_once(shared_data, tokenizer, own_cache):
    """Two builders of one entry at once (parallel compare runs): one encodes, the other waits and reads."""
    import threading

    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"]
    task = get_task("funsd")
    spy = CountingEncode(task)
    stores, encoder, cfg = [], task.window_encoder(), _cfg("funsd")
    threads = [threading.Thread(target=lambda: stores.append(encode_cached(encoder, docs, tokenizer, None, cfg)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spy.calls == 1 and len(stores) == 2 and stores[0].folder == stores[1].folder
    assert list(stores[1]) == spy.real(spy.task, docs, tokenizer, None, _cfg("funsd"))


def test_torchrun_ranks_share_one_build(tiny_base, tmp_path_factory):
    """2-process torchrun: the main process encodes each split once, the other rank reads its cache entries.

    Checked on the session's torchrun RVL-CDIP run (tests/ddp_runs.py: a cold OCR and window cache, validation
    on the pages' val split), which test_distributed_train and test_distributed_ocr check too."""
    from tests.ddp_runs import torchrun_rvl

    proc = torchrun_rvl(tmp_path_factory, tiny_base)
    cache = proc.cache
    assert proc.returncode == 0, proc.output[-3000:]
    log = [line for line in proc.output.splitlines() if "aetnet.data.encoding.store" in line]
    built = [line for line in log if "encoded into" in line]
    read = [line for line in log if "from the cache" in line]
    # main process: training and validation windows built (before rank 1 starts), test windows after training;
    # rank 1: handed the training and validation entries by the main process, nothing encoded, nothing read
    assert [line.split(": ")[1] for line in built] == ["training windows", "evaluation windows", "evaluation windows"]
    assert read == []
    handed = [line for line in proc.output.splitlines() if "prepared by the main process" in line]
    assert len(handed) == 1 and handed[0].rsplit("/", 1)[1] == built[0].rsplit("/", 1)[1]
    assert len(list((cache / "windows").glob("*/meta.json"))) == 3
    metrics = proc.metrics
    assert metrics["world_size"] == 2


def test_parallel_build_equals_serial(shared_data, tokenizer, own_cache, monkeypatch):
    """Chunks encoded by 2 spawned workers, written in order: the same rows as the in-memory encoding."""
    from aetnet.data.encoding import store as window_store
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    splits = read_funsd_folder(find_funsd_root(shared_data / "funsd"))
    docs = splits["train"] + splits["eval"]
    monkeypatch.setattr(window_store, "CHUNK", 2)
    monkeypatch.setattr(window_store, "PARALLEL_CHUNKS", 4)
    assert window_store.encode_workers(_cfg("funsd", encode_workers=2), len(docs)) == 2
    assert window_store.encode_workers(_cfg("funsd", encode_workers=2), 6) == 1  # 3 chunks: in process
    task = get_task("funsd")
    label2id = {label: i for i, label in enumerate(task.label_list(splits))}
    expected = task.encode(docs, tokenizer, label2id, _cfg("funsd"))
    spy = CountingEncode(task)
    store = encode_cached(task.window_encoder(), docs, tokenizer, label2id, _cfg("funsd", encode_workers=2))
    assert spy.calls == 0  # every chunk was encoded in a worker process
    assert list(store) == expected
    again = encode_cached(task.window_encoder(), docs, tokenizer, label2id, _cfg("funsd", encode_workers=1))
    assert again.folder == store.folder and spy.calls == 0  # the worker count is not part of the fingerprint
    with pytest.raises(AetnetError, match="encode_workers"):
        _cfg("funsd", encode_workers=-1)


def test_changed_encoder_code_is_a_new_entry(shared_data, tokenizer, own_cache, tmp_path):
    """Editing the module of a task's class (a fix, a local change) makes a new fingerprint: no stale windows."""
    import importlib.util

    from aetnet.data.encoding.key import window_fingerprint
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    source = tmp_path / "my_task_module.py"
    source.write_text("from aetnet.tasks.funsd import FunsdTask\n\n\nclass MyTask(FunsdTask):\n    pass\n")
    spec = importlib.util.spec_from_file_location("my_task_module", source)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["my_task_module"] = module
    try:
        spec.loader.exec_module(module)
        task = module.MyTask()
        docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"]
        before, described = window_fingerprint(task.window_encoder(), docs, tokenizer, None, _cfg("funsd"))
        assert window_fingerprint(task.window_encoder(), docs, tokenizer, None, _cfg("funsd"))[0] == before
        source.write_text(source.read_text() + "    # a changed encoder\n")
        assert window_fingerprint(task.window_encoder(), docs, tokenizer, None, _cfg("funsd"))[0] != before
        assert described["code"]["transformers"] and described["code"]["tokenizers"]
    finally:
        del sys.modules["my_task_module"]


def _first_words_encode(examples, tokenizer, label2id, cfg):
    """A stand-in encoder (not a task): the FUNSD task's windows of each page's first 5 words."""
    from dataclasses import replace

    return get_task("funsd").encode([replace(d, words=d.words[:5], boxes=d.boxes.tolist()[:5], labels=None,
                                             segment_ids=None) for d in examples], tokenizer, None, cfg)


def test_the_cache_takes_an_encode_function_not_a_task(shared_data, tokenizer, own_cache):
    """encode_cached runs any WindowEncoder's function; a task's windows and another function's under the same
    task name are two entries (the function and its module are in the fingerprint), never one read for the other."""
    from aetnet.data.encoding.key import WindowEncoder, window_fingerprint
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"]
    cfg = _cfg("funsd")
    task_store = encode_cached(get_task("funsd").window_encoder(), docs, tokenizer, None, cfg)
    mine = WindowEncoder(_first_words_encode, "funsd")
    store = encode_cached(mine, docs, tokenizer, None, cfg)
    assert store.folder != task_store.folder
    assert list(store) == _first_words_encode(docs, tokenizer, None, cfg)
    assert all(len({i for i in w.word_ids if i is not None and i >= 0}) <= 5 for w in store)
    _, described = window_fingerprint(mine, docs, tokenizer, None, cfg)
    assert described["task"] == "funsd" and described["task_class"] == f"{__name__}._first_words_encode"
    with pytest.raises(TypeError, match="WindowEncoder"):
        encode_cached(get_task("funsd"), docs, tokenizer, None, cfg)  # the old call: refused, not misread


def test_a_relation_schema_is_part_of_the_fingerprint(shared_data, tokenizer):
    """The relation task's schema (its protocol) shapes its windows and is not in cfg.data: two protocols, two keys."""
    from aetnet.data.encoding.key import window_fingerprint
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    docs = read_funsd_folder(find_funsd_root(shared_data / "funsd"))["train"][:2]
    task, cfg = get_task("funsd-re"), _cfg("funsd-re")
    keys = set()
    for protocol in ("page", "chunks"):
        task.use_protocol(resolve_config({}, {"task": "funsd-re", "relations": {"protocol": protocol}}, []))
        keys.add(window_fingerprint(task.window_encoder(), docs, tokenizer, {"x": 0}, cfg)[0])
    assert len(keys) == 2
