"""End to end on the new bases through the CLI: LiLT (lora -> merged export with ONNX -> predict on a real
FUNSD form, PyTorch and ONNX agreeing) and the tiny LayoutLMv3-Chinese with aet and lora."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aetnet.cli.main import main

DATA = Path(__file__).resolve().parent / "data"
FUNSD_PAGE = DATA / "funsd/dataset/testing_data/images/82092117.png"
TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]


def test_lilt_lora_finetune_export_onnx_predict(tmp_path):
    pytest.importorskip("onnxruntime")
    import transformers

    from aetnet.predict.predictor import Predictor

    run = tmp_path / "run"
    assert main(["finetune", "funsd", "--demo", "--base", "tiny-lilt", "--strategy", "lora", "--output", str(run),
                 *TINY_BUDGET]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["f1"] <= 1 and (run / "model" / "adapter" / "adapter_config.json").is_file()
    export = tmp_path / "export"
    assert main(["export", str(run), "--output", str(export), "--merge-lora", "--onnx"]) == 0
    meta = json.loads((export / "aetnet.json").read_text())
    assert meta["onnx"]["inputs"] == ["input_ids", "bbox", "attention_mask"]  # LiLT reads no image
    card = (export / "README.md").read_text()
    assert "license: apache-2.0" in card and "- lilt" in card  # the tiny stand-in's own licence, LiLT's tag
    # The merged export is a plain LiLT token classifier for transformers.
    model = transformers.AutoModelForTokenClassification.from_pretrained(str(export))
    assert type(model).__name__ == "LiltForTokenClassification"
    torch_pages = Predictor(export).predict_file(FUNSD_PAGE)
    onnx_pages = Predictor(export, backend="onnx").predict_file(FUNSD_PAGE)
    words = torch_pages[0]["words"]
    assert len(words) > 50
    assert [w["text"] for w in words] == [w["text"] for w in onnx_pages[0]["words"]]
    assert [w["label"] for w in words] == [w["label"] for w in onnx_pages[0]["words"]]
    np.testing.assert_allclose([w["score"] for w in words], [w["score"] for w in onnx_pages[0]["words"]],
                               atol=1e-4)


@pytest.mark.parametrize("strategy", ["aet", "lora"])
def test_tiny_chinese_base_end_to_end(tmp_path, strategy):
    run = tmp_path / strategy
    assert main(["finetune", "funsd", "--demo", "--base", "tiny-layoutlmv3-chinese", "--strategy", strategy,
                 "--output", str(run), *TINY_BUDGET]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["f1"] <= 1
    tokenizer = json.loads((run / "model" / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "Unigram"  # the run kept the base's SentencePiece vocabulary
    if strategy == "aet":  # the XLM-R text aligner (same vocabulary) was trained and saved
        aligner = json.loads((run / "model" / "text_aligner" / "config.json").read_text())
        assert aligner["vocab_size"] == json.loads((run / "model" / "config.json").read_text())["vocab_size"]
    export = tmp_path / f"{strategy}-export"
    assert main(["export", str(run), "--output", str(export)]) == 0
    assert "license: apache-2.0" in (export / "README.md").read_text()
