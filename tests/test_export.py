"""Export: the exported folder (and its ONNX graph) reproduce the run's logits; model card; LoRA merge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aetnet
from aetnet.cli.main import main
from aetnet.errors import AetnetError
from aetnet.export.card import model_card
from aetnet.export.folder import merge_adapters, training_only_tensors
from aetnet.inference.modelio import load_model
from aetnet.train.runner import finetune

TINY_BUDGET = ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
               "data.max_eval_documents=1"]


@pytest.fixture(scope="module")
def exported(funsd_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "funsd"
    assert main(["export", str(funsd_run), "--output", str(out), "--onnx"]) == 0
    return out


def _page_inputs(processor, batch: int = 2) -> dict[str, torch.Tensor]:
    """Real words on a drawn page through the HF processor; rows of different lengths (padded)."""
    image = Image.new("RGB", (300, 200), "white")
    rows = [["Date:", "12/10/98", "TO:", "George", "Baroody"], ["FAX", "NUMBER:"]][:batch]
    boxes = [[[10 + 50 * i, 10, 55 + 50 * i, 30] for i in range(len(r))] for r in rows]
    norm = [[[round(1000 * b[0] / 300), round(1000 * b[1] / 200), round(1000 * b[2] / 300),
              round(1000 * b[3] / 200)] for b in bs] for bs in boxes]
    enc = processor([image] * len(rows), rows, boxes=norm, padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "bbox", "attention_mask", "pixel_values")}


def test_exported_folder_reproduces_run_logits(funsd_run, exported):
    reference = load_model(funsd_run)
    inputs = _page_inputs(reference.processor)
    assert inputs["attention_mask"][1].sum() < inputs["attention_mask"][0].sum()  # padding present
    with torch.no_grad():
        want = reference.model(**inputs).logits
        got_aetnet = aetnet.load(exported).model(**inputs).logits
        from transformers import AutoModelForTokenClassification

        hf = AutoModelForTokenClassification.from_pretrained(str(exported)).eval()
        got_hf = hf(**inputs).logits
    assert want.shape == (2, inputs["input_ids"].shape[1], 7)
    assert (got_aetnet - want).abs().max().item() <= 1e-4
    assert (got_hf - want).abs().max().item() <= 1e-4
    assert hf.config.id2label[3] == "B-QUESTION"


def test_export_folder_contents_and_meta(funsd_run, exported):
    files = {p.name for p in exported.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "aetnet.json",
            "README.md", "model.onnx", "metrics.json"} <= files
    assert not any(name.endswith(".bin") for name in files)
    meta = json.loads((exported / "aetnet.json").read_text())
    labels = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
    assert meta["labels"] == labels
    assert meta["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert meta["label2id"]["I-ANSWER"] == 6
    assert meta["ocr"] == {"engine": "tesseract", "lang": "eng", "psm": 3}
    assert (meta["task"], meta["kind"], meta["strategy"], meta["box_level"]) == (
        "funsd", "token", "full", "segment")
    assert training_only_tensors(exported) == []
    card = (exported / "README.md").read_text()
    metrics = json.loads((funsd_run / "metrics.json").read_text())
    assert f"| train_loss | {metrics['train_loss']:.4g} |" in card
    # trained on the synthetic demo: no FUNSD terms claimed (tests/test_hub.py checks the FUNSD licence rule)
    assert "synthetic demo pages" in card and "AutoModelForTokenClassification" in card


def test_model_card_names_base_and_data_licences():
    card = model_card({"task": "cord", "kind": "token", "strategy": "full",
                       "base": "microsoft/layoutlmv3-base", "labels": ["O"]}, {"f1": 0.5})
    assert "CC BY-NC-SA 4.0" in card and "CC BY 4.0" in card and "| f1 | 0.5 |" in card
    card = model_card({"task": "docvqa", "kind": "qa", "strategy": "aet", "base": "x"}, {})
    assert "research" in card and "No metrics.json" in card
    assert "AutoModelForQuestionAnswering" not in card  # an AET model is not a plain transformers model


def test_onnx_graph_matches_pytorch_on_new_shapes(funsd_run, exported):
    import onnxruntime as ort

    reference = load_model(funsd_run)
    inputs = _page_inputs(reference.processor)
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 2):  # shapes the export never traced (it traced batch 2, length 16)
        feed = {k: v[:batch].numpy() for k, v in inputs.items()}
        (got,) = session.run(["logits"], feed)
        with torch.no_grad():
            want = reference.model(**{k: v[:batch] for k, v in inputs.items()}).logits.numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4
    meta = json.loads((exported / "aetnet.json").read_text())
    assert meta["onnx"]["max_abs_diff"] <= 1e-4 and meta["onnx"]["outputs"] == ["logits"]


def test_onnx_without_onnxruntime_fails_with_install_hint(funsd_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(AetnetError, match=r"pip install aetnet\[onnx\]"):
        aetnet.export.folder.export_model(funsd_run, tmp_path / "out", onnx=True)
    assert not (tmp_path / "out").exists()


def _tiny_token_model():
    from transformers import LayoutLMv3ForTokenClassification

    from aetnet.models.tiny import ensure_tiny_base

    torch.manual_seed(0)
    base = str(ensure_tiny_base() / "layoutlmv3")
    return LayoutLMv3ForTokenClassification.from_pretrained(base, num_labels=3)


def test_merge_lora_keeps_logits_and_records_merge(funsd_run):
    from peft import LoraConfig, get_peft_model

    processor = load_model(funsd_run).processor
    inputs = _page_inputs(processor)
    base = _tiny_token_model().eval()
    with torch.no_grad():
        plain = base(**inputs).logits.clone()
    # init_lora_weights=False: B is random, so the adapters change the output and merging matters.
    lora = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(**inputs).logits.clone()
    assert (adapted - plain).abs().max() > 1e-3
    merged, meta = merge_adapters(peft_model, {"strategy": "lora", "task": "funsd"})
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        assert (merged(**inputs).logits - adapted).abs().max() <= 1e-4
    assert meta == {"strategy": "full", "merged_from": "lora", "lora_merged": True, "task": "funsd"}


def test_merge_lora_on_a_model_without_adapters_is_an_error():
    with pytest.raises(AetnetError, match="no LoRA adapters"):
        merge_adapters(torch.nn.Linear(2, 2), {"strategy": "full"})


def test_training_only_tensor_names(tmp_path):
    from safetensors.torch import save_file

    names = ["layoutlmv3.patch_embed.proj.weight", "vision_proj.weight", "image_queue", "queue_ptr",
             "image_aligner_m.encoder.w", "momentum_text.layer.0", "classifier.weight", "text_proj.bias",
             "alignment.temp", "image_aligner.encoder.layer.0.attention.output.dense.weight"]
    save_file({n: torch.zeros(1) for n in names}, str(tmp_path / "model.safetensors"))
    kept = ("layoutlmv3.patch_embed.proj.weight", "classifier.weight",
            "image_aligner.encoder.layer.0.attention.output.dense.weight")
    expected = [n for n in names if n not in kept]
    assert sorted(training_only_tensors(tmp_path)) == sorted(expected)


def test_export_errors(funsd_run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "not an aetnet model folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(AetnetError, match="not empty"):
        aetnet.export.folder.export_model(funsd_run, busy)
    assert (busy / "notes.txt").read_text() == "keep me"


def test_aet_export_keeps_aligners_drops_training_parts_and_matches(funsd_run, tmp_path):
    import onnxruntime as ort

    run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "aet-run",
                   overrides=TINY_BUDGET)
    out = aetnet.export.folder.export_model(run, tmp_path / "aet-export", onnx=True)
    assert (out / "image_aligner" / "model.safetensors").is_file()
    assert (out / "text_aligner" / "model.safetensors").is_file()
    assert training_only_tensors(out) == []
    reference = load_model(run)
    inputs = _page_inputs(reference.processor)
    with torch.no_grad():
        want = reference.model(**inputs)["logits"]
        got = aetnet.load(out).model(**inputs)["logits"]
    assert (got - want).abs().max().item() <= 1e-4
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})
    assert np.abs(onnx_logits - want.numpy()).max() <= 1e-4


def test_lora_run_exported_with_merged_lora_matches_and_loads_in_transformers(aetnet_cache, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForTokenClassification

    run = finetune("funsd", strategy="lora", base="tiny", demo=True, output=tmp_path / "lora-run",
                   overrides=TINY_BUDGET + ["lora.r=4", "lora.alpha=8"])
    out = tmp_path / "lora-export"
    assert main(["export", str(run), "--output", str(out), "--merge-lora"]) == 0
    meta = json.loads((out / "aetnet.json").read_text())
    assert (meta["strategy"], meta["merged_from"], meta["lora_merged"]) == ("full", "lora", True)
    assert not (out / "adapter").exists() and not (out / "base").exists()
    merged = load_file(str(out / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k or "modules_to_save" in k for k in merged)
    # The merged weight is base + (alpha / r) * B @ A, summed here rank by rank.
    base = load_file(str(run / "model" / "base" / "model.safetensors"))
    adapter = load_file(str(run / "model" / "adapter" / "adapter_model.safetensors"))
    key = "layoutlmv3.encoder.layer.1.attention.self.value"
    a, b = (adapter[f"base_model.model.{key}.lora_{x}.weight"] for x in "AB")
    delta = sum(torch.outer(b[:, k], a[k]) for k in range(4))
    assert delta.abs().max() > 0  # two training steps moved B away from zero
    torch.testing.assert_close(merged[f"{key}.weight"], base[f"{key}.weight"] + (8 / 4) * delta,
                               rtol=0, atol=1e-6)
    reference = load_model(run)
    inputs = _page_inputs(reference.processor)
    with torch.no_grad():
        want = reference.model(**inputs).logits
        got = aetnet.load(out).model(**inputs).logits
        hf = AutoModelForTokenClassification.from_pretrained(str(out)).eval()
        got_hf = hf(**inputs).logits
    assert type(hf).__name__ == "LayoutLMv3ForTokenClassification"
    assert (got - want).abs().max().item() <= 1e-4
    assert (got_hf - want).abs().max().item() <= 1e-4
