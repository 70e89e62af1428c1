"""Shared fixtures: one cache folder per test session (per xdist worker, with the tiny base, the demo
datasets and the tiny FUNSD run built once for all workers), the real data samples in ``tests/data``, the
xdist grouping and order of the slow tests, and small helpers."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

# One cache for the whole session, set before any aetnet import reads it; under pytest-xdist one per
# worker process: a worker inherits the controller's environment, so a cache this file made there
# (recorded in _AETNET_TEST_CACHE) is replaced by the worker's own. A cache the user set is kept.
# The controller's folder, unused by its tests under xdist, then holds what the workers build once
# for all (SHARED: see _shared_builds and funsd_run).
SHARED: Path | None = None
if "AETNET_CACHE" not in os.environ or os.environ["AETNET_CACHE"] == os.environ.get("_AETNET_TEST_CACHE"):
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("_AETNET_TEST_CACHE"):
        SHARED = Path(os.environ["_AETNET_TEST_CACHE"]) / "shared-by-workers"
    os.environ["AETNET_CACHE"] = os.environ["_AETNET_TEST_CACHE"] = tempfile.mkdtemp(prefix="aetnet-test-cache-")
# Where each xdist worker writes the groups of its tests (see pytest_collection_modifyitems), beside the
# controller's process id; the controller's scheduler reads them.
GROUPS = os.environ.setdefault("_AETNET_TEST_GROUPS",
                               os.path.join(tempfile.gettempdir(), f"aetnet-test-groups-{os.getpid()}"))
# Under pytest-xdist, each worker's PyTorch gets its share of the cores (``make test`` runs one worker per core):
# two workers of two OpenMP threads each on two cores spent about 15 % more CPU time, spinning, for the same tests.
# The subprocesses the tests start inherit it. A thread count the user set is kept.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
# Runs that leave train.num_workers unset load their data in the test process: starting DataLoader workers
# forks the whole test process (about 0.8 CPU s per tiny run, twice the run itself); the tests of the
# workers (test_data_workers, test_resume, test_cuda) set train.num_workers. A value the user set is kept.
os.environ.setdefault("AETNET_NUM_WORKERS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextlib.contextmanager
def _shared_lock(name: str):
    """Holds ``SHARED/<name>.lock`` (the first worker builds, the others wait for it)."""
    from filelock import FileLock

    SHARED.mkdir(parents=True, exist_ok=True)
    with FileLock(str(SHARED / f"{name}.lock")):
        yield


@pytest.fixture(scope="session", autouse=True)
def _frozen_imports():
    """The objects of the heavy imports (torch, transformers, aetnet: about 400,000) are moved out of the
    garbage collector's sight once: the Trainer calls ``gc.collect()`` as each training starts, and a full
    collection walked all of them every time (0.25 s or more per run in a test process)."""
    import gc

    import aetnet.cli.main  # noqa: F401
    import aetnet.train.runner  # noqa: F401

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session", autouse=True)
def _shared_builds():
    """Under xdist: the tiny base is built once for all workers (a file lock in the controller's folder),
    and each worker's cache links to it, to one demo folder (``ensure_demo`` builds atomically, so two
    workers may build the same demo concurrently) and to one OCR cache. Without xdist everything is built
    lazily, as before."""
    if SHARED is None:
        return
    from aetnet.models import tiny

    own = Path(os.environ["AETNET_CACHE"])
    with _shared_lock("tiny-base"):
        saved, os.environ["AETNET_CACHE"] = os.environ["AETNET_CACHE"], str(SHARED)
        try:
            base = tiny.ensure_tiny_base()
        finally:
            os.environ["AETNET_CACHE"] = saved
    (own / base.name).symlink_to(base, target_is_directory=True)
    # the demo folder, and the OCR cache (each page's result written atomically): the RVL-CDIP and DocVQA
    # demo pages are given to Tesseract once for all workers. Tests that count Tesseract runs use their own.
    for shared in ("demo", "ocr"):
        (SHARED / shared).mkdir(exist_ok=True)
        (own / shared).symlink_to(SHARED / shared, target_is_directory=True)


#: The slowest test modules (from ``pytest --durations``), started first so that the suite's tail is short.
SLOW_FIRST = ("test_compare", "test_checkpointing", "test_hub", "test_distributed_ocr", "test_resume",
              "test_distributed_train", "test_backends", "test_serve", "test_pairs", "test_serve_pairs",
              "test_relations_e2e", "test_export")


#: The tests that read the shared two-process runs of tests/ddp_runs.py: run in one worker, so that no other
#: worker sits idle on the file lock while the first one launches them.
SHARED_LAUNCH_TESTS = ("tests/test_distributed_train.py::", "tests/test_distributed_ocr.py::",
                       "tests/test_window_store.py::test_torchrun_ranks_share_one_build")


#: Module fixtures built in about a second (a tokenizer, a few generated pages): their tests need not share
#: a worker.
CHEAP_MODULE_FIXTURES = frozenset({"paths", "tokenizer", "processor", "corpus", "photos", "pages", "demos",
                                   "text_pdf"})


def _module_fixture_scope(item) -> str | None:
    """The test module of a module-, class- or package-scoped fixture (or a session one defined in a test
    module) that ``item`` uses and that is not cheap to build, else None."""
    info = getattr(item, "_fixtureinfo", None)
    for name in info.names_closure if info else ():
        defs = None if name in CHEAP_MODULE_FIXTURES else info.name2fixturedefs.get(name)
        if defs and defs[-1].scope != "function" and defs[-1].baseid.endswith(".py"):
            return defs[-1].baseid
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (``make test``): the tests that share a fixture built once per module (a
    trained run, a server, exports) run in one worker, so it is built once and not once per worker; the
    other tests are spread one by one. The slowest modules come first."""
    groups = {}
    for item in items:
        scope = _module_fixture_scope(item)
        if scope is not None:
            groups[item.nodeid] = scope
        if item.nodeid.startswith(SHARED_LAUNCH_TESTS):  # one worker launches, no other one waits on its lock
            groups[item.nodeid] = "tests/ddp_runs.py"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        import json

        path = f"{GROUPS}-{worker}.json"
        with open(path + ".tmp", "w") as fh:
            json.dump(groups, fh)
        os.replace(path + ".tmp", path)

    def rank(item) -> int:
        module = Path(str(item.fspath)).stem
        return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)


DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data samples in ``tests/data`` (FUNSD, CORD, DocVQA, RVL-CDIP, the Tesseract test page),
    in their original release layouts; see the README of each folder for its source and terms."""
    if not (DATA / "funsd").is_dir():
        pytest.fail(f"the real data samples are missing: expected them at {DATA} (part of the repository)")
    return DATA


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    from aetnet.models.tiny import ensure_tiny_base

    return ensure_tiny_base()


@pytest.fixture(scope="session")
def aetnet_cache() -> Path:
    """The session's ``AETNET_CACHE`` folder (tiny base, demos, OCR cache)."""
    return Path(os.environ["AETNET_CACHE"])


@pytest.fixture(scope="session")
def funsd_run(aetnet_cache, tmp_path_factory) -> Path:
    """A tiny FUNSD run on the demo, trained once per session (once for all xdist workers) and shared by
    the tests that need a trained model folder (export, predict); read it, never write into it."""
    from aetnet.train.runner import finetune

    run = (SHARED or tmp_path_factory.getbasetemp()) / "tiny-funsd-run"
    with _shared_lock("tiny-funsd-run") if SHARED else contextlib.nullcontext():
        if not (run / "model" / "aetnet.json").is_file():
            finetune("funsd", base="tiny", demo=True, output=run, overrides=[
                "train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
                "data.max_eval_documents=1"])
    return run


@pytest.fixture(scope="session")
def funsd_pages(shared_data):
    """Write the real FUNSD samples as aetnet pages (``train.jsonl``, ``test.jsonl``) into a folder, with
    plain label names (``QUESTION``, not ``B-QUESTION``) and the FUNSD entities as segments."""
    import json

    from aetnet.data.documents.pages import document_to_page
    from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

    def write(out: Path) -> Path:
        splits = read_funsd_folder(find_funsd_root(shared_data / "funsd"))
        out.mkdir(parents=True, exist_ok=True)
        for split, name in (("train", "train"), ("eval", "test")):
            with open(out / f"{name}.jsonl", "w") as fh:
                for doc in splits[split]:
                    page = document_to_page(doc, image=str(Path(doc.image_path).resolve()))
                    page["labels"] = [lb if lb == "O" else lb[2:] for lb in doc.labels]
                    fh.write(json.dumps(page) + "\n")
        return out

    return write


SEQ_CLASSES = ["letter", "form", "email", "invoice"]


def _model_folder(kind: str, folder: Path, meta: dict) -> Path:
    """A sequence / QA model folder built straight from the tiny base (no task needed)."""
    import torch
    import transformers

    from aetnet.data.encoding.processor import load_processor
    from aetnet.inference.modelio import save_model
    from aetnet.models.tiny import ensure_tiny_base

    base = ensure_tiny_base() / "layoutlmv3"
    torch.manual_seed(0)
    if kind == "sequence":
        model = transformers.LayoutLMv3ForSequenceClassification.from_pretrained(
            str(base), num_labels=len(SEQ_CLASSES), id2label=dict(enumerate(SEQ_CLASSES)),
            label2id={c: i for i, c in enumerate(SEQ_CLASSES)})
    else:
        model = transformers.LayoutLMv3ForQuestionAnswering.from_pretrained(str(base))
    save_model(model, load_processor(str(base)), folder, {
        "kind": kind, "strategy": "full", "box_level": "word", "stride": 32, "base": "tiny",
        "ocr": {"engine": "tesseract", "lang": "eng", "psm": 3}, **meta})
    return folder


@pytest.fixture(scope="session")
def seq_model(aetnet_cache, tmp_path_factory) -> Path:
    """An untrained RVL-CDIP-style page classifier (classes SEQ_CLASSES, 128-token windows)."""
    return _model_folder("sequence", tmp_path_factory.mktemp("seq") / "model",
                         {"task": "rvl-cdip", "labels": SEQ_CLASSES, "max_length": 128})


@pytest.fixture(scope="session")
def qa_model(aetnet_cache, tmp_path_factory) -> Path:
    """An untrained DocVQA-style QA model; 128-token windows, so a DocVQA page needs several and the
    answer search spans windows."""
    return _model_folder("qa", tmp_path_factory.mktemp("qa") / "model",
                         {"task": "docvqa", "labels": None, "max_length": 128})


@pytest.fixture(scope="session")
def padded_windows():
    """Factory of a batch of random windows padded like the Collator (pad id, zero boxes, -100 labels).

    ``build(seed, lengths, width, num_labels, pad=1, box_span=100, pixels="normal", augmented=False)``:
    row ``i`` holds ``<s>``, ``lengths[i] - 2`` random tokens with random boxes (sides below
    ``box_span``) and labels, and ``</s>``; ``pixels`` are 64x64 ``normal`` or ``uniform`` in [-1, 1];
    ``augmented`` adds ``aug_pixel_values``. Draws come from one generator seeded with ``seed``.
    """
    import torch

    def build(seed: int, lengths: tuple[int, ...], width: int, num_labels: int, pad: int = 1, box_span: int = 100,
              pixels: str = "normal", augmented: bool = False) -> dict:
        g = torch.Generator().manual_seed(seed)
        rows = len(lengths)
        ids = torch.full((rows, width), pad)
        bbox = torch.zeros((rows, width, 4), dtype=torch.long)
        att = torch.zeros((rows, width), dtype=torch.long)
        labels = torch.full((rows, width), -100)
        for row, n in enumerate(lengths):
            ids[row, 0], ids[row, n - 1] = 0, 2  # <s> ... </s>
            ids[row, 1:n - 1] = torch.randint(10, 1000, (n - 2,), generator=g)
            xy = torch.randint(0, 900, (n - 2, 2), generator=g)
            bbox[row, 1:n - 1] = torch.cat([xy, xy + torch.randint(1, box_span, (n - 2, 2), generator=g)], 1)
            att[row, :n] = 1
            labels[row, 1:n - 1] = torch.randint(0, num_labels, (n - 2,), generator=g)
        shape = (rows, 3, 64, 64)
        clean = torch.randn(shape, generator=g) if pixels == "normal" else torch.rand(shape, generator=g) * 2 - 1
        batch = {"input_ids": ids, "bbox": bbox, "attention_mask": att, "labels": labels, "pixel_values": clean}
        if augmented:
            batch["aug_pixel_values"] = torch.randn(shape, generator=g)
        return batch

    return build


@pytest.fixture(scope="session")
def tiny_aet_model():
    """Factory of a tiny :class:`~aetnet.strategies.aet.model.AETNetModel` built in memory (no dropout).

    ``build(image, patch, hidden=32, vocab=100, pad=1, queue_size=8, seed=0, model_kwargs=None, **aet)``:
    a 1-layer LayoutLMv3 token model (4 labels) with tiny ViT and RoBERTa aligners, ``torch`` seeded with
    ``seed`` first; ``aet`` are :class:`~aetnet.strategies.aet.config.AETConfig` options (``embed_dim`` 16 by default),
    ``model_kwargs`` extra :class:`AETNetModel` arguments.
    """
    import torch
    from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification

    from aetnet.strategies.aet.aligners import (
        build_image_aligner,
        build_text_aligner,
        tiny_image_aligner_config,
        tiny_text_aligner_config,
    )
    from aetnet.strategies.aet.config import AETConfig
    from aetnet.strategies.aet.model import AETNetModel

    def build(image: int, patch: int, hidden: int = 32, vocab: int = 100, pad: int = 1, queue_size: int = 8,
              seed: int = 0, model_kwargs: dict | None = None, **aet) -> AETNetModel:
        torch.manual_seed(seed)
        config = LayoutLMv3Config(
            hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            input_size=image, patch_size=patch, vocab_size=vocab, max_position_embeddings=64,
            max_2d_position_embeddings=1001, coordinate_size=6, shape_size=4, num_labels=4, pad_token_id=pad,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        fusion = LayoutLMv3ForTokenClassification(config)
        image_aligner = build_image_aligner(config=tiny_image_aligner_config(hidden, image, patch))
        text_aligner = build_text_aligner(config=tiny_text_aligner_config(vocab, hidden, 64, pad_token_id=pad))
        options = {"queue_size": queue_size, "embed_dim": 16, **aet}
        return AETNetModel(fusion, image_aligner, text_aligner, AETConfig(**options), **(model_kwargs or {}))

    return build


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown in a run without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` whose groups are the ones the workers wrote (pytest-xdist 3.8 marks a group by
    renaming the test's node id, which pytest 9 no longer reads, so its own loadgroup groups nothing)."""
    if config.getoption("dist") != "loadgroup":
        return None
    import glob
    import json

    from xdist.scheduler import LoadScopeScheduling

    class WorkerGroups(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # the workers wrote theirs before sending their collections
                self.groups = {}
                for path in glob.glob(f"{GROUPS}-*.json"):
                    with open(path) as fh:
                        self.groups.update(json.load(fh))
                    os.remove(path)
            return self.groups.get(nodeid, nodeid)

    return WorkerGroups(config, log)
