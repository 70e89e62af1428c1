"""Strategy ``aet-lora``: alignment-enriched tuning with LoRA adapters instead of full fine-tuning.

Parameter-efficient AETNet: low-rank adapters (peft LoRA, settings ``cfg.lora``) sit on the fusion
LayoutLMv3 backbone, the ViT image aligner and the RoBERTa text aligner; the task head, the two
contrastive projection heads and the temperature train in full; every other weight is frozen. The
losses, views and fusion are those of the ``aet`` strategy (:class:`aetnet.strategies.aet.model.AETNetModel`).

Targets: ``lora.target_modules`` names LayoutLMv3 layers (``query``, ``value``, ``key``, ``dense``).
RoBERTa uses the same names (``encoder.layer.N.attention.self.query``). transformers' ViT has used
two layouts: ``encoder.layer.N.attention.attention.query`` (4.x) and ``layers.N.attention.q_proj`` (5.x);
a target the aligner does not have under its own name is mapped through :data:`SYNONYMS`
(``query -> q_proj``, ``key -> k_proj``, ``value -> v_proj``, ``dense -> o_proj, fc1, fc2``). The exact
module names adapted in each part are resolved once at build time and saved, so a folder reloads with
the very same adapters whatever the configuration says later.

Momentum encoders: the momentum copies are made AFTER the adapters are injected, so they are copies of
the adapted aligners; the EMA (:class:`~aetnet.strategies.aet.builder.MomentumContrast` with
``AETLoraModel.ema_trainable_only``) averages only what trains online, i.e. the LoRA matrices and the
projection heads. Frozen base weights are identical in the online and momentum aligners from the
start and nothing ever writes them. The momentum copies keep their own copy of those frozen weights
rather than sharing the tensors: the Trainer saves a non-``PreTrainedModel`` checkpoint with
``safetensors.save_file``, which refuses tensors that share memory, so sharing would break
``--resume`` checkpoints (it would save ~210M parameters of memory with base-size aligners).

Model folder layout (written by :meth:`AETLoraModel.save_inference`, read by
:meth:`AETLoraStrategy.load`)::

    model/
      aetnet.json, tokenizer/processor files    (written by the runner)
      config.json, model.safetensors            fusion LayoutLMv3: frozen backbone weights (no adapters)
                                                and the trained task head
      image_aligner/config.json, model.safetensors   frozen ViT weights (no adapters)
      text_aligner/config.json, model.safetensors    frozen RoBERTa weights (no adapters)
      aet_fusion.json                           ViT input normalisation, as for ``aet``
      aet_lora.json                             r, alpha, dropout and the adapted module names per part
      adapters.safetensors                      every LoRA A/B matrix, keyed ``fusion.``/``image_aligner.``/
                                                ``text_aligner.`` + the module's parameter name

Adapters stay separate, so ``aetnet export RUN --merge-lora`` folds them into the three models
(:meth:`AETLoraModel.merge_and_unload`) and writes a plain ``aet`` folder (no peft needed to load it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from aetnet.config.settings import RunConfig
from aetnet.errors import AetnetError
from aetnet.models.heads import head_class
from aetnet.strategies.aet.aligners import build_image_aligner, build_text_aligner, check_compatible
from aetnet.strategies.aet.model import FUSION_FILE, AETNetModel
from aetnet.strategies.aet.strategy import AETStrategy
from aetnet.strategies.base import BasePaths, count_parameters, load_task_model
from aetnet.strategies.lora.strategy import _LORA_TYPES, _check_lora_settings, base_state_dict

logger = logging.getLogger(__name__)

__all__ = ["ADAPTER_FILE", "LORA_FILE", "SYNONYMS", "AETLoraModel", "AETLoraStrategy", "LoraSpec",
           "merge_lora_", "resolve_lora_spec"]

ADAPTER_FILE = "adapters.safetensors"
LORA_FILE = "aet_lora.json"
PARTS = ("fusion", "image_aligner", "text_aligner")
#: LayoutLMv3/BERT-style layer names -> their names in transformers 5.x ViT (used only when the aligner
#: has no layer with the name itself).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "query": ("q_proj",), "key": ("k_proj",), "value": ("v_proj",), "dense": ("o_proj", "fc1", "fc2"),
}
#: Task heads of the LayoutLMv3 classes: trained in full, never adapted.
_HEADS = ("classifier", "qa_outputs")


@dataclass
class LoraSpec:
    """Which modules of each part carry LoRA adapters, and their rank, scale and dropout.

    Attributes:
        r: LoRA rank.
        alpha: LoRA alpha (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        targets: the configured ``lora.target_modules`` (layer names), kept for the record.
        modules: part name (``fusion``, ``image_aligner``, ``text_aligner``) -> full module names in
            that part (e.g. ``layoutlmv3.encoder.layer.0.attention.self.query``).
    """

    r: int
    alpha: float
    dropout: float
    targets: list[str] = field(default_factory=list)
    modules: dict[str, list[str]] = field(default_factory=dict)

    def peft_config(self, part: str) -> LoraConfig:
        """The peft ``LoraConfig`` adapting exactly ``modules[part]`` (no ``modules_to_save``)."""
        # A list of full names matches only those modules (peft matches a name or a '.'-suffix).
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.modules[part]), bias="none")


def _aligner_modules(part: str, aligner: nn.Module, targets: list[str]) -> list[str]:
    """Full names of the Linear layers of an aligner that ``targets`` (or their synonyms) select."""
    linear = {name: name.rsplit(".", 1)[-1] for name, mod in aligner.named_modules()
              if isinstance(mod, nn.Linear)}
    leaves = set(linear.values())
    wanted: set[str] = set()
    unmatched = []
    for target in targets:
        names = {target} if target in leaves else set(SYNONYMS.get(target, ())) & leaves
        if names:
            wanted |= names
        else:
            unmatched.append(target)
    if not wanted:
        raise AetnetError(
            f"lora.target_modules: {', '.join(targets)} match no Linear layer of the {part.replace('_', ' ')} "
            f"({type(aligner).__name__}); choose from: {', '.join(sorted(leaves))}"
        )
    if unmatched:
        logger.warning("aet-lora: %s has no layer named %s; those targets adapt LayoutLMv3 only", part,
                       ", ".join(unmatched))
    return [name for name, leaf in linear.items() if leaf in wanted]


def resolve_lora_spec(cfg: RunConfig, fusion: nn.Module, image_aligner: nn.Module,
                      text_aligner: nn.Module) -> LoraSpec:
    """Validate ``cfg.lora`` and list the modules to adapt in each part.

    Raises:
        AetnetError: invalid rank/alpha/dropout, or targets that match nothing in LayoutLMv3 or in
            one of the aligners.
    """
    targets = _check_lora_settings(fusion, cfg)  # numbers, and every target exists in the backbone
    fusion_modules = [name for name, mod in fusion.named_modules()
                      if name.startswith("layoutlmv3.") and name.rsplit(".", 1)[-1] in targets
                      and isinstance(mod, _LORA_TYPES)]
    return LoraSpec(
        r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, targets=targets,
        modules={"fusion": fusion_modules,
                 "image_aligner": _aligner_modules("image_aligner", image_aligner, targets),
                 "text_aligner": _aligner_modules("text_aligner", text_aligner, targets)},
    )


def merge_lora_(module: nn.Module) -> int:
    """In place: fold every LoRA layer of ``module`` into its base layer and put the base layer back.

    Afterwards ``module`` holds only its original layer types (``nn.Linear`` ...), with weights
    ``W + (alpha / r) B A``.

    Returns:
        How many LoRA layers were merged.
    """
    names = [name for name, mod in module.named_modules() if isinstance(mod, LoraLayer)]
    for name in names:
        layer = module.get_submodule(name)
        layer.merge(safe_merge=True)  # safe_merge: fail on NaN/inf instead of writing them
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    if "peft_config" in vars(module):  # set by inject_adapter_in_model; a merged model is plain
        del module.peft_config
    return len(names)


class AETLoraModel(AETNetModel):
    """:class:`AETNetModel` whose fusion model and aligners carry LoRA adapters.

    The adapters are injected here, before ``AETNetModel`` makes the momentum copies, so the momentum
    aligners are copies of the adapted ones. ``forward`` is unchanged (the fusion model keeps its
    ``LayoutLMv3For...`` type, adapters live inside its layers).

    Args:
        fusion, image_aligner, text_aligner: plain (unadapted) models, as for ``AETNetModel``.
        aet: loss settings; ``None`` for an inference-only model.
        lora: the adapters to inject (:func:`resolve_lora_spec`).
        **kw: ``vit_norm``, ``pixel_mean``, ``pixel_std``, ``mask_token_id``, ``special_token_ids``.
    """

    #: The strategy of the model ``merge_and_unload`` returns (read by ``aetnet.export.folder.merge_adapters``).
    merged_strategy = "aet"
    #: The EMA averages only the trainable parameters of both aligners and heads (LoRA matrices, projections).
    ema_trainable_only = True

    def __init__(self, fusion: nn.Module, image_aligner: nn.Module, text_aligner: nn.Module, aet, *,
                 lora: LoraSpec, **kw) -> None:
        for part, module in zip(PARTS, (fusion, image_aligner, text_aligner)):
            # inject_adapter_in_model also freezes every non-LoRA parameter of the part.
            inject_adapter_in_model(lora.peft_config(part), module)
        for head in _HEADS:
            if isinstance(getattr(fusion, head, None), nn.Module):
                getattr(fusion, head).requires_grad_(True)
        super().__init__(fusion, image_aligner, text_aligner, aet, **kw)
        self.lora = lora

    def adapter_state_dict(self) -> dict[str, Any]:
        """The LoRA tensors of the inference parts (fusion and aligners), as contiguous CPU tensors."""
        return {name: tensor.detach().to("cpu").contiguous() for name, tensor in self.state_dict().items()
                if name.split(".", 1)[0] in PARTS and ".lora_" in name}

    def save_inference(self, folder: str | Path) -> None:
        """Write the frozen weights, the trained head and the adapters (layout in the module docstring)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for part, sub in zip(PARTS, ("", "image_aligner", "text_aligner")):
            module, target = getattr(self, part), folder / sub
            target.mkdir(parents=True, exist_ok=True)
            module.config.save_pretrained(target)
            save_file(base_state_dict(module), str(target / "model.safetensors"), metadata={"format": "pt"})
        save_file(self.adapter_state_dict(), str(folder / ADAPTER_FILE), metadata={"format": "pt"})
        (folder / LORA_FILE).write_text(json.dumps(asdict(self.lora), indent=2))
        settings = {"vit_norm": self.vit_norm, "pixel_mean": list(self.pixel_mean),
                    "pixel_std": list(self.pixel_std)}
        (folder / FUSION_FILE).write_text(json.dumps(settings, indent=2))

    @classmethod
    def load_inference(cls, folder: str | Path, kind: str) -> AETLoraModel:
        """Rebuild an inference model (eval mode) from a folder written by :meth:`save_inference`.

        Raises:
            AetnetError: a missing file, or adapters that do not match ``aet_lora.json``.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        for needed in (LORA_FILE, ADAPTER_FILE, FUSION_FILE, "config.json", "image_aligner/config.json",
                       "text_aligner/config.json"):
            if not (folder / needed).is_file():
                raise AetnetError(f"{folder}: not an aet-lora model folder ({needed} is missing); "
                                  "pass RUN_DIR/model.")
        spec = LoraSpec(**json.loads((folder / LORA_FILE).read_text()))
        settings = json.loads((folder / FUSION_FILE).read_text())
        model = cls(head_class(kind).from_pretrained(folder),
                    build_image_aligner(folder / "image_aligner", layer_norm_eps=None),
                    build_text_aligner(folder / "text_aligner"), None, lora=spec,
                    vit_norm=settings["vit_norm"], pixel_mean=settings["pixel_mean"],
                    pixel_std=settings["pixel_std"])
        adapters = load_file(str(folder / ADAPTER_FILE))
        result = model.load_state_dict(adapters, strict=False)
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if missing or result.unexpected_keys:
            raise AetnetError(
                f"{folder / ADAPTER_FILE}: adapters do not match {LORA_FILE} (missing "
                f"{missing[:3]}, unexpected {result.unexpected_keys[:3]}); re-export the run's model folder."
            )
        return model.eval()

    def merge_and_unload(self) -> AETNetModel:
        """Fold the adapters into the fusion model and aligners; return a plain inference AETNet model.

        Like peft's method of the same name this changes the modules in place: afterwards this
        object's parts hold no adapters. The returned model has no alignment part (``aet=None``).
        """
        merged = sum(merge_lora_(getattr(self, part)) for part in PARTS)
        logger.info("aet-lora: merged %d LoRA layers into the fusion model and the aligners", merged)
        model = AETNetModel(self.fusion, self.image_aligner, self.text_aligner, None, vit_norm=self.vit_norm,
                            pixel_mean=self.pixel_mean, pixel_std=self.pixel_std)
        return model.train(self.training)


class AETLoraStrategy(AETStrategy):
    """AET with LoRA on LayoutLMv3 and both aligners; heads, projections and temperature train in full.

    ``extra_views`` (I+) and ``callbacks`` (the EMA step) are those of the ``aet`` strategy.
    """

    name = "aet-lora"

    def build(self, task, cfg: RunConfig, paths: BasePaths, labels: list[str] | None, processor) -> AETLoraModel:
        """The adapted AETNet model (see :class:`AETLoraModel`).

        Raises:
            AetnetError: missing aligners, aligners that do not fit, or bad ``lora`` settings.
        """
        if not paths.image_aligner or not paths.text_aligner:
            raise AetnetError(
                "strategy aet-lora needs both aligners; set model.image_aligner and model.text_aligner in "
                "the recipe (e.g. facebook/deit-base-patch16-224 and roberta-base) or use --base tiny."
            )
        fusion = load_task_model(task.kind, paths.layoutlmv3, labels, cfg)
        _check_lora_settings(fusion, cfg)  # fail before loading the aligners
        image_aligner = build_image_aligner(paths.image_aligner)
        text_aligner = build_text_aligner(paths.text_aligner)
        check_compatible(fusion.config, image_aligner, text_aligner)
        spec = resolve_lora_spec(cfg, fusion, image_aligner, text_aligner)
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
        model = AETLoraModel(fusion, image_aligner, text_aligner, cfg.aet, lora=spec,
                             pixel_mean=image_processor.image_mean, pixel_std=image_processor.image_std,
                             mask_token_id=tokenizer.mask_token_id,
                             special_token_ids=tokenizer.all_special_ids)
        trainable, total = count_parameters(model)
        logger.info("aet-lora: r=%d alpha=%s, %d/%d/%d adapted layers (fusion/ViT/RoBERTa); "
                    "%d of %d parameters train", spec.r, spec.alpha,
                    *(len(spec.modules[p]) for p in PARTS), trainable, total)
        return model

    def load(self, path: str | Path, meta: dict[str, Any]) -> AETLoraModel:
        """The inference model saved in ``path`` (``aetnet.json`` metadata gives the task kind)."""
        return AETLoraModel.load_inference(path, meta["kind"])
