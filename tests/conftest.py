"""Shared fixtures: one cache folder per test session (tiny base and demos are built once), the
real data samples, and small helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# One cache for the whole session, set before any aetnet import reads it.
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="aetnet-test-cache-"))
os.environ.setdefault("AETNET_CACHE", str(_SESSION_CACHE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def shared_data_root() -> Path:
    """``$AETNET_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("AETNET_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.fail(
            f"the real data samples are missing: expected them at {root}; set AETNET_SHARED_DATA to the "
            "shared/data folder"
        )
    return root


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
    """A tiny FUNSD run on the demo, trained once per session and shared by the tests that need a
    trained model folder (export, predict)."""
    from aetnet.train.runner import finetune

    run = tmp_path_factory.getbasetemp() / "tiny-funsd-run"
    if not (run / "model" / "aetnet.json").is_file():
        finetune("funsd", base="tiny", demo=True, output=run, overrides=[
            "train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2", "data.max_eval_documents=1"])
    return run


@pytest.fixture(scope="session")
def funsd_pages(shared_data):
    """Write the real FUNSD samples as aetnet pages (``train.jsonl``, ``test.jsonl``) into a folder, with
    plain label names (``QUESTION``, not ``B-QUESTION``) and the FUNSD entities as segments."""
    import json

    from aetnet.data.pages import document_to_page
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

    from aetnet.data.processor import load_processor
    from aetnet.models.tiny import ensure_tiny_base
    from aetnet.train.runner import save_model

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
