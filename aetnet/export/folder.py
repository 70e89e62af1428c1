"""Inference checkpoints: a run's model as a self-contained folder, optionally with an ONNX graph.

``export_model(RUN_DIR, OUT)`` loads the run's model with :func:`aetnet.inference.modelio.load_model`
(so every strategy that can be loaded can be exported) and writes:

- the weights as safetensors (``save_pretrained``, or the model's own ``save_inference`` for AET,
  which keeps the aligners and drops what only training needs), the config, tokenizer and processor;
- ``aetnet.json``: task, kind, labels with ``id2label``/``label2id``, strategy, box level, window
  size and the OCR engine and settings of training, plus where it was exported from;
- ``README.md``: a Hub-ready model card (:mod:`aetnet.export.card`: YAML front matter with licence,
  base, datasets, metrics and a ``model-index``), the metrics of ``RUN_DIR/metrics.json`` and the
  licence terms inherited from the base weights and the data;
- with ``merge_lora``, LoRA adapters folded into the weights (the result is a plain model);
- with ``onnx``, ``model.onnx`` (dynamic batch and sequence axes), checked against PyTorch with
  onnxruntime; with ``quantize`` as well, ``model.int8.onnx``: the graph with dynamic int8
  quantisation of its matrix products (weights int8 per output channel, activations quantised at
  run time), its max difference to PyTorch recorded. ``aetnet predict/serve --backend onnx|onnx-int8``
  run them.

A plain LayoutLMv3 export (strategies ``full``, ``head``, merged LoRA) also loads with
``transformers.AutoModelForTokenClassification.from_pretrained`` (or the sequence / QA class).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aetnet.errors import AetnetError
from aetnet.export.card import LICENCE_FILE, licence_file, model_card
from aetnet.inference.backends import ONNX_FILE, ONNX_INT8_FILE
from aetnet.models.heads import output_names
from aetnet.models.task_model import abilities

logger = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-4
ONNX_INPUTS = ("input_ids", "bbox", "attention_mask", "pixel_values")
#: Extra inputs of relation models (funsd-re): (batch, entities) first-token positions and label ids.
ENTITY_INPUTS = ("entity_positions", "entity_labels")
INSTALL_ONNX = "pip install aetnet[onnx]"
#: Names of tensors only training needs (AET momentum copies, queues, contrastive projections and
#: temperature, all under the AET model's ``alignment`` part).
TRAINING_ONLY = re.compile(
    r"(^|\.)(alignment|momentum[^.]*|[^.]+_m|[^.]*queue[^.]*|vision_proj|text_proj|temp)(\.|$)")

def merge_adapters(model: nn.Module, meta: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Fold LoRA adapters into the weights (``merge_and_unload``, as peft models provide).

    Returns:
        The merged model and a copy of ``meta`` whose ``strategy`` is ``full`` (the folder now holds
        a plain model and loads as one; the model's ``merged_strategy`` instead when it has one, e.g.
        ``aet`` for aet-lora), with ``merged_from`` naming the trained strategy.

    Raises:
        AetnetError: the model has no adapters to merge.
    """
    able = abilities(model)
    if able.merged_strategy is None:
        raise AetnetError(
            f"--merge-lora: the {meta.get('strategy')} model has no LoRA adapters to merge "
            f"({type(model).__name__} has no merge_and_unload); export it without --merge-lora"
        )
    merged = able.merge_and_unload()
    # A merged aet-lora model is an AETNet model (aligners included), not a plain LayoutLMv3.
    strategy = able.merged_strategy
    meta = dict(meta, strategy=strategy, merged_from=meta.get("strategy"), lora_merged=True)
    return merged, meta


def training_only_tensors(folder: str | Path) -> list[str]:
    """Names of tensors that only training needs, in the folder's safetensors files (sub-folders
    included: the AET model keeps its aligners in ``image_aligner/`` and ``text_aligner/``)."""
    from safetensors import safe_open

    names = []
    for file in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            names.extend(k for k in fh.keys() if TRAINING_ONLY.search(k))
    return names


def export_model(run_dir: str | Path, output: str | Path, merge_lora: bool = False, onnx: bool = False,
                 opset: int = 17, quantize: bool = False) -> Path:
    """Write an inference checkpoint of a run (or model) folder into ``output``.

    Args:
        run_dir: a run folder (holding ``model/``) or a model folder.
        output: the export folder; must be new, empty or an earlier export.
        merge_lora: fold LoRA adapters into the weights.
        onnx: also write ``model.onnx`` and check it against PyTorch.
        opset: ONNX opset version.
        quantize: also write ``model.int8.onnx`` (dynamic int8); needs ``onnx``.

    Returns:
        The export folder.

    Raises:
        AetnetError: not a model folder, an occupied output folder, nothing to merge, onnxruntime
            missing, or an ONNX graph that disagrees with PyTorch.
    """
    from aetnet.inference.modelio import META_FILE, load_model, save_model

    run_dir, output = Path(run_dir), Path(output)
    if quantize and not onnx:
        raise AetnetError("--quantize quantises the ONNX graph: pass --onnx as well")
    if onnx:
        _require_onnx()
    if output.exists() and any(output.iterdir()) and not (output / META_FILE).is_file():
        raise AetnetError(f"{output}: output folder exists and is not empty; choose a new --output folder")
    loaded = load_model(run_dir)
    model_dir = run_dir / "model" if (run_dir / "model" / META_FILE).is_file() else run_dir
    if output.resolve() == model_dir.resolve():
        raise AetnetError(f"{output}: --output is the model folder itself; choose another folder")
    model, meta = loaded.model, dict(loaded.meta)
    if merge_lora:
        model, meta = merge_adapters(model, meta)
    labels = meta.get("labels")
    if labels:
        meta["id2label"] = {str(i): label for i, label in enumerate(labels)}
        meta["label2id"] = {label: i for i, label in enumerate(labels)}
    meta["exported_from"] = str(model_dir.resolve())
    if output.exists():
        shutil.rmtree(output)
    save_model(model, loaded.processor, output, meta)
    leftovers = training_only_tensors(output)
    if leftovers:
        raise AetnetError(
            f"{output}: the {meta['strategy']} model saved training-only tensors "
            f"({', '.join(leftovers[:4])}, ...); "
            "its save_inference must drop momentum copies, queues and projection heads"
        )
    metrics = _read_metrics(model_dir)
    for name, copy in (("metrics.json", "metrics.json"), ("config.yaml", "training_config.yaml")):
        if (model_dir.parent / name).is_file():
            shutil.copy(model_dir.parent / name, output / copy)
    if onnx:
        reloaded = load_model(output)
        diff = export_onnx(reloaded.model, reloaded.processor, meta["kind"], output / ONNX_FILE, opset)
        meta["onnx"] = {"file": ONNX_FILE, "opset": opset, "inputs": list(onnx_inputs(
            meta["kind"], reloaded.processor.image_processor is not None)),
                        "outputs": list(output_names(meta["kind"])), "max_abs_diff": diff}
        if quantize:
            int8_diff = quantize_onnx(output / ONNX_FILE, output / ONNX_INT8_FILE, reloaded.model,
                                      reloaded.processor, meta["kind"])
            meta["onnx"]["int8"] = {"file": ONNX_INT8_FILE, "max_abs_diff": int8_diff,
                                    "quantization": "dynamic int8, MatMul weights per channel (7-bit)"}
        (output / META_FILE).write_text(json.dumps(meta, indent=2))
    demo = _trained_on_demo(metrics)
    (output / "README.md").write_text(model_card(meta, metrics, demo=demo), encoding="utf-8")
    terms = licence_file(meta, demo)
    if terms:  # the card's license_link: both the base's and the data's terms
        (output / LICENCE_FILE).write_text(terms, encoding="utf-8")
    logger.info("exported %s to %s", model_dir, output)
    return output


def _trained_on_demo(metrics: dict[str, Any]) -> bool:
    """Whether the run trained on aetnet's synthetic demo pages, as its ``metrics.json`` records
    (``demo_data``). A run without a data path may have downloaded the real dataset (FUNSD, CORD), so
    nothing else counts as the demo: a run that does not say so is taken to carry its dataset's terms."""
    return metrics.get("demo_data") is True


def _read_metrics(model_dir: Path) -> dict[str, Any]:
    for folder in (model_dir.parent, model_dir):
        if (folder / "metrics.json").is_file():
            try:
                return json.loads((folder / "metrics.json").read_text())
            except json.JSONDecodeError:
                logger.warning("%s is not valid JSON; the model card lists no metrics",
                               folder / "metrics.json")
    return {}


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise AetnetError(
            f"--onnx needs the onnx and onnxruntime packages; install them with `{INSTALL_ONNX}`"
        ) from None
    return onnxruntime


def onnx_inputs(kind: str, image: bool = True) -> tuple[str, ...]:
    """Input names of the ONNX graph of a ``kind`` model (relation models add :data:`ENTITY_INPUTS`; a base
    without an image stream, LiLT, has no ``pixel_values``)."""
    inputs = ONNX_INPUTS if image else ONNX_INPUTS[:3]
    return inputs + ENTITY_INPUTS if kind == "relation" else inputs


class LogitsModule(nn.Module):
    """Any aetnet inference model as ``(input_ids, bbox, attention_mask, pixel_values) -> logits``
    (QA: ``(start_logits, end_logits)``), the signature the ONNX graph gets."""

    def __init__(self, model: nn.Module, kind: str, image: bool = True):
        super().__init__()
        self.model, self.kind, self.image = model, kind, image

    def forward(self, input_ids: torch.Tensor, bbox: torch.Tensor, attention_mask: torch.Tensor,
                *rest: torch.Tensor):
        """(batch, seq) ids, (batch, seq, 4) boxes, (batch, seq) mask, then (batch, 3, H, W) pixels unless the
        base has no image stream (``image=False``: LiLT) -> (batch, seq, labels) token logits, (batch, labels)
        class logits, or two (batch, seq) QA logits; relation models also take (batch, entities)
        ``entity_positions`` and ``entity_labels`` and return (batch, entities, 2K) per-entity factors."""
        pixels = {"pixel_values": rest[0]} if self.image else {}
        extra = dict(zip(ENTITY_INPUTS, rest[1:] if self.image else rest))
        out = self.model(input_ids=input_ids, bbox=bbox, attention_mask=attention_mask, **pixels, **extra)
        return tuple(out[name] for name in output_names(self.kind)) if self.kind == "qa" else out["logits"]


def sample_inputs(processor, batch: int, length: int, seed: int = 0, entities: int = 0) -> dict[str, torch.Tensor]:
    """Random but valid model inputs: ids in the vocabulary, ordered 0-1000 boxes, the image size of
    the processor; the last row is padded to show that masking survives the export. With
    ``entities``, also (batch, entities) entity positions and label ids (the last row's last entity
    is padding, label -1)."""
    g = torch.Generator().manual_seed(seed)
    tok = processor.tokenizer
    ids = torch.randint(5, len(tok), (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    corners = torch.randint(0, 500, (batch, length, 2), generator=g)
    bbox = torch.cat([corners, corners + torch.randint(0, 500, (batch, length, 2), generator=g)], dim=-1)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[-1, length // 2:] = 0
        ids[-1, length // 2:] = tok.pad_token_id
    out = {"input_ids": ids, "bbox": bbox, "attention_mask": mask}
    if processor.image_processor is not None:  # LiLT reads no image
        size = processor.image_processor.size
        out["pixel_values"] = torch.randn(batch, 3, size["height"], size["width"], generator=g)
    if entities:
        out["entity_positions"] = torch.randint(1, max(2, length // 2), (batch, entities), generator=g)
        out["entity_labels"] = torch.randint(0, 4, (batch, entities), generator=g)
        out["entity_labels"][-1, -1] = -1
    return out


def export_onnx(model: nn.Module, processor, kind: str, path: str | Path, opset: int = 17) -> float:
    """Export ``model`` to ONNX with dynamic batch/sequence axes and check it with onnxruntime.

    The graph is traced on one input shape and checked on another (different batch and sequence
    length, with padding), so a shape frozen into the graph fails the check.

    Returns:
        The max absolute difference between ONNX and PyTorch outputs.

    Raises:
        AetnetError: onnxruntime is missing, or the difference exceeds :data:`ONNX_TOLERANCE`.
    """
    ort = _require_onnx()
    image = processor.image_processor is not None
    wrapper = LogitsModule(model.float().eval(), kind, image).eval()
    names, inputs = output_names(kind), onnx_inputs(kind, image)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS[:3]}
    if image:
        axes["pixel_values"] = {0: "batch"}
    axes.update({name: {0: "batch", 1: "entities"} for name in ENTITY_INPUTS if name in inputs})
    for name in names:
        axes[name] = {0: "batch"} if kind == "sequence" else {0: "batch", 1: "sequence"}
        if kind == "relation":
            axes[name] = {0: "batch", 1: "entities"}
    relation = kind == "relation"
    trace = sample_inputs(processor, 2, 16, seed=0, entities=3 if relation else 0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape arithmetic
        torch.onnx.export(wrapper, tuple(trace[k] for k in inputs), str(path),
                          input_names=list(inputs), output_names=list(names), dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
    check = sample_inputs(processor, 3, 29, seed=1, entities=5 if relation else 0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(names), {k: check[k].numpy() for k in inputs})
    with torch.no_grad():
        want = wrapper(*(check[k] for k in inputs))
    want = want if isinstance(want, tuple) else (want,)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if not diff <= ONNX_TOLERANCE:
        raise AetnetError(f"{path}: the ONNX graph differs from PyTorch by {diff:.2e} (> {ONNX_TOLERANCE}); "
                          f"try another --opset")
    logger.info("ONNX graph %s matches PyTorch (max abs diff %.2e)", path, diff)
    return diff


def quantize_onnx(source: str | Path, target: str | Path, model: nn.Module, processor, kind: str) -> float:
    """Dynamic int8 quantisation of an ONNX graph's matrix products (embedding lookups, the patch
    convolution, layer norms and softmax stay float32), checked against PyTorch.

    Returns:
        The max absolute difference between the int8 graph's and PyTorch's outputs on random inputs
        (recorded, not a pass/fail check: int8 rounding changes logits by around 1e-2 of their range).
    """
    ort = _require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a "consider pre-processing" hint on the root logger
    try:
        # reduce_range: 7-bit weights (-64..63). onnxruntime's uint8 x int8 kernel on x86 CPUs without
        # VNNI (AVX2, AVX-512 without VNNI) adds pairs of products in int16, which saturates with 8-bit
        # weights (255 * 127 * 2 > 32767): logits off by 11 % of their range on an AVX2 CPU, against
        # 0.7 % on VNNI CPUs. With 7-bit weights a pair stays within 255 * 64 * 2 = 32640 on every CPU.
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], per_channel=True,
                         reduce_range=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    image = processor.image_processor is not None
    inputs = onnx_inputs(kind, image)
    check = sample_inputs(processor, 3, 29, seed=1, entities=5 if kind == "relation" else 0)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    names = output_names(kind)
    got = session.run(list(names), {k: check[k].numpy() for k in inputs})
    with torch.no_grad():
        want = LogitsModule(model.float().eval(), kind, image)(*(check[k] for k in inputs))
    want = want if isinstance(want, tuple) else (want,)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    logger.info("int8 ONNX graph %s: max abs diff to PyTorch %.2e", target, diff)
    return diff
