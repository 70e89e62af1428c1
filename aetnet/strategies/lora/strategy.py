"""Strategy ``lora``: low-rank adapters (peft) on LayoutLMv3's attention, task head trained in full.

peft knows no default target modules for LayoutLMv3, so the recipe names them (``lora.target_modules``,
default the self-attention ``query`` and ``value`` projections of every layer). Targets are matched
only inside the backbone (``layoutlmv3.*``), so a name such as ``dense`` never puts an adapter on the
task head, which trains in full through peft's ``modules_to_save``.

Model folder layout (written by :meth:`LoraTaskModel.save_inference`, read by :meth:`LoraStrategy.load`)::

    model/
      aetnet.json, tokenizer/processor files   (written by the runner)
      base/config.json, base/model.safetensors  the frozen LayoutLMv3 (+ the head's initial weights),
                                                byte-identical to the weights training started from
      adapter/adapter_config.json               peft LoraConfig (r, alpha, dropout, targets, head)
      adapter/adapter_model.safetensors         LoRA A/B matrices and the trained head

The adapter is kept separate (not merged) so ``aetnet export --merge-lora`` can fold it into the base
later with ``model.merge_and_unload()``; the folder needs nothing from the hub to load.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from torch import nn

from aetnet.bases import detect_family
from aetnet.config.settings import RunConfig
from aetnet.errors import AetnetError
from aetnet.models.heads import head_class
from aetnet.models.task_model import TaskModel
from aetnet.strategies.base import Strategy, load_task_model

logger = logging.getLogger(__name__)



#: The task head of each LayoutLMv3 class: trained in full, never given adapters.
HEAD_MODULES = {"token": "classifier", "sequence": "classifier", "qa": "qa_outputs", "relation": "classifier"}
BASE_DIR = "base"
ADAPTER_DIR = "adapter"
#: Module types peft's LoRA can wrap (the error for anything else names the offending target).
_LORA_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding)


class LoraTaskModel(PeftModel, TaskModel):
    """A peft ``PeftModel`` around a ``LayoutLMv3For...`` model that saves a self-contained folder.

    ``forward(**batch)`` is the wrapped model's (``loss``, ``logits`` / ``start_logits``,
    ``end_logits``); every ``PeftModel`` method (``merge_and_unload``, ``disable_adapter``, ...) works.
    """

    #: ``merge_and_unload`` returns a plain ``LayoutLMv3For...`` model.
    merged_strategy = "full"

    def merge_and_unload(self, **kwargs) -> nn.Module:
        """peft's ``merge_and_unload`` (the LoRA tuner's): the adapters folded into the base weights."""
        return self.base_model.merge_and_unload(**kwargs)

    def save_inference(self, folder: str | Path) -> None:
        """Write ``base/`` (the unadapted weights) and ``adapter/`` (LoRA + head) into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / BASE_DIR).mkdir(parents=True, exist_ok=True)
        base = self.get_base_model()
        base.config.save_pretrained(folder / BASE_DIR)
        save_file(base_state_dict(base), str(folder / BASE_DIR / "model.safetensors"),
                  metadata={"format": "pt"})
        # save_embedding_layers=False: the full base is beside the adapter, and "auto" may query the hub.
        self.save_pretrained(folder / ADAPTER_DIR, save_embedding_layers=False)


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the model as it was before peft wrapped it.

    peft renames wrapped weights (``query.base_layer.weight``, ``classifier.original_module.weight``)
    and adds its own (``lora_A``/``lora_B``, ``modules_to_save``); this maps them back and drops the
    additions, so the result loads into a plain ``LayoutLMv3For...``.

    Args:
        model: ``PeftModel.get_base_model()`` (the HF model with peft layers inside).

    Returns:
        name -> contiguous CPU tensor, the original names and values.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if any(p.startswith("lora_") or p == "modules_to_save" for p in parts):
            continue
        parts = [p for p in parts if p not in ("base_layer", "original_module")]
        out[".".join(parts)] = tensor.detach().to("cpu").contiguous()
    return out


def _check_lora_settings(model: nn.Module, cfg: RunConfig, backbone: str = "layoutlmv3") -> list[str]:
    """Validate ``cfg.lora`` against the backbone (the task model's attribute ``backbone``: the base family's);
    returns the target names."""
    s = cfg.lora
    if s.r < 1:
        raise AetnetError(f"lora.r={s.r} must be a positive integer (for example lora.r=8)")
    if s.alpha <= 0:
        raise AetnetError(f"lora.alpha={s.alpha} must be positive (for example lora.alpha=16)")
    if not 0.0 <= s.dropout < 1.0:
        raise AetnetError(f"lora.dropout={s.dropout} must lie in [0, 1)")
    targets = list(s.target_modules)
    if not targets:
        raise AetnetError("lora.target_modules is empty; name backbone layers, for example query,value")
    leaves = {name.rsplit(".", 1)[-1]: type(m) for name, m in model.named_modules()
              if name.startswith(backbone + ".") and isinstance(m, _LORA_TYPES)}
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise AetnetError(
            f"lora.target_modules: {', '.join(missing)} match no Linear/Conv2d/Embedding layer of the "
            f"{backbone} backbone; choose from: {', '.join(sorted(leaves))}"
        )
    return targets


def lora_config(cfg: RunConfig, kind: str, targets: list[str], backbone: str = "layoutlmv3") -> LoraConfig:
    """The peft ``LoraConfig`` for a run: adapters on backbone ``targets``, the task head saved in full."""
    # A regex (full match) confines targets to the backbone, so the head is never adapted twice.
    pattern = re.escape(backbone) + r"\..*\.(" + "|".join(re.escape(t) for t in targets) + ")"
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=pattern,
        modules_to_save=[HEAD_MODULES[kind]],
        bias="none",
    )


class LoraStrategy(Strategy):
    """LoRA adapters on the backbone (``cfg.lora``), backbone weights frozen, task head trained."""

    name = "lora"

    def build(self, task, cfg: RunConfig, paths, labels: list[str] | None, processor) -> LoraTaskModel:
        model = load_task_model(task.kind, paths.layoutlmv3, labels, cfg)
        backbone = detect_family(paths.layoutlmv3).backbone
        targets = _check_lora_settings(model, cfg, backbone)
        peft_model = LoraTaskModel(model, lora_config(cfg, task.kind, targets, backbone))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        logger.info("lora: r=%d alpha=%s on %s; %d trainable parameters", cfg.lora.r, cfg.lora.alpha,
                    ",".join(targets), trainable)
        return peft_model

    def load(self, path: str | Path, meta: dict[str, Any]) -> LoraTaskModel:
        """Rebuild the model from a folder written by :meth:`LoraTaskModel.save_inference`."""
        path = Path(path)
        for needed in (path / BASE_DIR / "config.json", path / ADAPTER_DIR / "adapter_config.json"):
            if not needed.is_file():
                raise AetnetError(f"{path}: not a lora model folder ({needed.relative_to(path)} is missing)")
        base = head_class(meta["kind"], detect_family(str(path / BASE_DIR))).from_pretrained(str(path / BASE_DIR))
        return LoraTaskModel.from_pretrained(base, str(path / ADAPTER_DIR))
