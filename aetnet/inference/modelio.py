"""Model folders: ``save_model`` writes one, ``load_model`` reads it back.

A model folder holds ``save_pretrained`` safetensors weights (AET strategies: the inference model
only), the processor files and ``aetnet.json`` (task, kind, strategy, labels and how inputs were
built), which is everything :func:`load_model`, ``aetnet evaluate``, ``predict`` and ``export`` need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aetnet.data.encoding.processor import load_processor
from aetnet.errors import AetnetError
from aetnet.models.task_model import abilities
from aetnet.registry import STRATEGIES, TASKS

META_FILE = "aetnet.json"


def get_task(name: str):
    """An instance of the registered task ``name`` (importing the built-in tasks first)."""
    import aetnet.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)()


def get_strategy(name: str):
    """An instance of the registered strategy ``name``."""
    import aetnet.strategies  # noqa: F401  (registers the built-in strategies)

    return STRATEGIES.get(name)()


def save_model(model, processor, folder: Path, meta: dict[str, Any]) -> None:
    """``save_pretrained`` (safetensors) + processor + ``aetnet.json`` metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    abilities(model).save_inference(folder)  # a plain HF model: save_pretrained
    processor.save_pretrained(folder)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))


@dataclass
class LoadedModel:
    """A model folder loaded back: the model (eval mode), its processor and its metadata."""

    model: torch.nn.Module
    processor: Any
    meta: dict[str, Any]

    @property
    def labels(self) -> list[str] | None:
        return self.meta.get("labels")


def load_model(path: str | Path, revision: str | None = None) -> LoadedModel:
    """Load a run's ``model/`` folder (or an exported folder, or a Hub id ``OWNER/NAME`` at ``revision``,
    downloaded into the Hub cache: :func:`aetnet.inference.hub.resolve_model`) with its processor and metadata."""
    from aetnet.inference.hub import resolve_model

    path = resolve_model(path, revision)
    if (path / "model" / META_FILE).is_file():
        path = path / "model"
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise AetnetError(f"{path}: not an aetnet model folder (no {META_FILE}); pass RUN_DIR/model")
    meta = json.loads(meta_path.read_text())
    model = get_strategy(meta["strategy"]).load(path, meta)
    model.eval()
    return LoadedModel(model, load_processor(str(path)), meta)
