"""Model backends for prediction: PyTorch, or onnxruntime on an export's ONNX graph (fp32 or int8).

A backend maps one padded batch of windows to numpy logits, whatever runs the model:

    backend = load_backend("exports/funsd", "onnx-int8")
    out = backend({"input_ids": ids, "bbox": bbox, "attention_mask": mask, "pixel_values": pixels})
    out["logits"]  # (batch, seq, labels) float32; QA: out["start_logits"], out["end_logits"]

``onnx`` runs ``model.onnx`` and ``onnx-int8`` runs ``model.int8.onnx`` (written by ``aetnet export
--onnx`` and ``aetnet export --onnx --quantize``); both read the export's metadata and processor only,
never the PyTorch weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aetnet.errors import AetnetError
from aetnet.models.heads import output_names

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
#: The ONNX graphs of an export (``aetnet export --onnx`` and ``--quantize``), read by the ``onnx`` and
#: ``onnx-int8`` backends.
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
META_FILE = "aetnet.json"


def model_folder(path: str | Path) -> Path:
    """The model folder of ``path`` (``RUN/model`` for a run folder)."""
    path = Path(path)
    return path / "model" if (path / "model" / META_FILE).is_file() else path


class TorchBackend:
    """A loaded PyTorch model on ``device`` in ``dtype``."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, kind: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.device, self.dtype, self.kind = torch.device(device), dtype, kind
        self.model = model.to(device=self.device, dtype=dtype).eval()

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """(B, L) ids/mask, (B, L, 4) boxes, (B, 3, H, W) pixels -> float32 logits by output name."""
        batch = {k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else v.dtype)
                 for k, v in batch.items()}
        out = self.model(**batch)
        return {name: out[name].float().cpu().numpy() for name in output_names(self.kind)}


class OnnxBackend:
    """An onnxruntime session on an export's ONNX graph (CPU unless ``providers`` says otherwise)."""

    #: No PyTorch model behind an ONNX graph (:attr:`TorchBackend.model` is one).
    model = None

    def __init__(self, path: str | Path, kind: str, threads: int | None = None,
                 providers: list[str] | None = None):
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path, self.kind = Path(path), kind
        self.name = "onnx-int8" if self.path.name == ONNX_INT8_FILE else "onnx"
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The same contract as :class:`TorchBackend` (inputs as int64 / float32 arrays)."""
        feed = {k: _numpy(batch[k]) for k in self.inputs}
        names = list(output_names(self.kind))
        return dict(zip(names, (np.asarray(o, dtype=np.float32) for o in self.session.run(names, feed))))


def _numpy(value: Any) -> np.ndarray:
    array = value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array.astype(np.int64)


def require_onnxruntime():
    """The onnxruntime module, or one clear error on how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise AetnetError("the onnx backends need onnxruntime; install it with `pip install aetnet[onnx]`") from None
    return onnxruntime


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The ``aetnet.json`` metadata of a model folder."""
    folder = model_folder(folder)
    if not (folder / META_FILE).is_file():
        raise AetnetError(f"{folder}: not an aetnet model folder (no {META_FILE}); pass RUN_DIR/model")
    return json.loads((folder / META_FILE).read_text())


def onnx_graph(folder: str | Path, backend: str) -> Path:
    """The ONNX file of ``backend`` in an export, or one clear error saying how to make it."""
    folder = model_folder(folder)
    name = ONNX_INT8_FILE if backend == "onnx-int8" else ONNX_FILE
    path = folder / name
    if not path.is_file():
        flags = "--onnx --quantize" if backend == "onnx-int8" else "--onnx"
        raise AetnetError(f"{folder}: --backend {backend} needs {name}; export the model with "
                          f"`aetnet export RUN --output DIR {flags}` and pass DIR")
    return path


def load_backend(folder: str | Path, backend: str = "torch", device: str = "cpu",
                 dtype: torch.dtype = torch.float32):
    """A backend for a model folder, with the folder's metadata and processor.

    Returns:
        ``(backend, meta, processor)``; ``backend.model`` is the PyTorch model for ``torch``.

    Raises:
        AetnetError: an unknown backend, a missing ONNX graph or onnxruntime, or an ONNX backend asked
            for another device or dtype than CPU float32.
    """
    if backend not in BACKENDS:
        raise AetnetError(f"backend '{backend}' is not supported; use {', '.join(BACKENDS)}")
    if backend == "torch":
        from aetnet.inference.modelio import load_model

        loaded = load_model(folder)
        return TorchBackend(loaded.model, loaded.meta["kind"], device, dtype), loaded.meta, loaded.processor
    if device != "cpu" or dtype != torch.float32:
        raise AetnetError(f"--backend {backend} runs on CPU in float32; drop --device/--dtype or use --backend torch")
    from aetnet.data.encoding.processor import load_processor

    path = onnx_graph(folder, backend)
    meta = read_meta(folder)
    return OnnxBackend(path, meta["kind"]), meta, load_processor(str(model_folder(folder)))
