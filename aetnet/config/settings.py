"""Run configuration: typed nested dataclasses are the only schema.

Resolution order: dataclass defaults -> recipe YAML -> CLI flags -> ``key=value`` overrides. Unknown
keys fail with the list of valid ones, so a typo in a recipe never silently does nothing. The
resolved configuration is saved beside every run as ``config.yaml``. Reading recipes and converting
text to the fields' types is :mod:`aetnet.config.parse`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aetnet.config.parse import (
    YAML_HINT,
    build_dataclass,
    check_choice,
    load_recipe_dict,
    merge_nested,
    parse_overrides,
    yaml_problem,
)
from aetnet.errors import AetnetError
from aetnet.registry import STRATEGIES

__all__ = ["DataConfig", "ModelConfig", "OWN_LABEL_TASKS", "RunConfig", "TrainConfig", "YAML_HINT", "config_sections",
           "load_recipe_dict", "parse_overrides", "resolve_config", "yaml_problem"]


@dataclass
class DataConfig:
    """Where the data comes from and how documents become model inputs."""

    path: str | None = None
    """Dataset folder, ``save_to_disk`` folder or hub id; ``None`` uses the official source (online)."""
    box_level: str = "segment"
    """``segment``: every word of an entity carries the entity box (as LayoutLMv3 was evaluated); ``word``."""
    max_length: int = 512
    """Maximum text tokens per window (LayoutLMv3 was pre-trained with 512)."""
    stride: int = 128
    """Tokens shared by consecutive windows of a long document."""
    on_bad_document: str = "error"
    """``error`` stops at the first bad document; ``skip`` records it in ``skipped.jsonl`` and goes on."""
    lang: str | None = None
    """XFUND language (tasks ``xfund``, ``xfund-re``; ``--lang``): ``zh``, ``ja``, ``es``, ``fr``, ``it``, ``de``,
    ``pt``, or ``all`` (every language's train split together, scored per language); ``None``: ``all``."""
    ocr_lang: str = "eng"
    """Tesseract language, for tasks whose data has no words."""
    ocr_psm: int = 3
    """Tesseract page-segmentation mode."""
    ocr_workers: int = 0
    """Processes recognising pages not yet in the OCR cache (``0``: every available core; ``1``: the run's own)."""
    eval_fraction: float = 0.2
    """Share of a single-split dataset held out for evaluation (deterministic)."""
    val_fraction: float = 0.1
    """Share of the training documents held out as the validation split when the run evaluates during
    training and the dataset has no ``validation``/``val``/``dev`` split (document-grouped, deterministic)."""
    select_on: str = "validation"
    """Split scored during training (``train.eval_strategy``) to pick the best checkpoint and stop early:
    ``validation``, or ``test`` (the reference LayoutLMv3 scripts' practice; only when asked for)."""
    max_train_documents: int | None = None
    """Use only the first N training documents (quick experiments)."""
    max_eval_documents: int | None = None
    """Use only the first N evaluation documents (test and validation)."""
    labels: list[str] | None = None
    """The label set of the ``token`` and ``classify`` tasks (entity names or BIO tags; class names), in id
    order; default: discovered from the training split. Other tasks have fixed label sets."""
    window_cache: bool = True
    """Keep the encoded windows in the on-disk, memory-mapped cache (``$AETNET_CACHE/windows``), built once per
    data content, tokenizer and encoding settings and reused by later runs; ``false`` encodes them in memory."""
    encode_workers: int = 0
    """Processes that tokenise when the window cache is built (``0``: every available core; ``1``: the run's own);
    builds of fewer than 10,240 examples always run in the run's own process."""

    def __post_init__(self) -> None:
        check_choice("data.box_level", self.box_level, ("segment", "word"))
        check_choice("data.select_on", self.select_on, ("validation", "test"))
        if not 0.0 < self.val_fraction < 1.0:
            raise AetnetError(f"data.val_fraction={self.val_fraction} must lie in (0, 1)")
        check_choice("data.on_bad_document", self.on_bad_document, ("error", "skip"))
        if self.encode_workers < 0:
            raise AetnetError(f"data.encode_workers={self.encode_workers} must be >= 0 (0: every available core)")
        if self.stride < 0 or self.stride >= self.max_length:
            raise AetnetError(
                f"data.stride={self.stride} must be >= 0 and smaller than data.max_length={self.max_length}"
            )


@dataclass
class ModelConfig:
    """Which pretrained weights to start from."""

    base: str = "microsoft/layoutlmv3-base"
    """LayoutLMv3 hub id or local folder; ``tiny`` builds a small offline model."""
    image_aligner: str = "facebook/deit-base-patch16-224"
    """ViT weights for the image aligner (AET strategies)."""
    text_aligner: str = "roberta-base"
    """RoBERTa weights for the text aligner (AET strategies)."""
    dropout: float | None = None
    """Override the hidden and attention dropout of the base model (0 for exact reproducibility checks)."""
    train_relative_position_bias: bool = False
    """Fine-tune LayoutLMv3's relative-position bias tables as the original LayoutLMv3 and AET code did
    (transformers 5.x reads them under no_grad, so by default they keep their pre-trained values); only
    for strategies that train the backbone (full, aet)."""
    attn_implementation: str = "sdpa"
    """Attention kernel of LayoutLMv3 and both aligners: ``sdpa`` (fused, no host sync) or ``eager`` (reference)."""

    def __post_init__(self) -> None:
        check_choice("model.attn_implementation", self.attn_implementation, ("sdpa", "eager"))


@dataclass
class TrainConfig:
    """Optimisation settings, passed to the Hugging Face Trainer."""

    learning_rate: float = 1e-5
    """Peak learning rate of AdamW (reached after the warmup)."""
    weight_decay: float = 0.0
    """AdamW weight decay (the Trainer exempts biases and LayerNorm weights)."""
    batch_size: int = 16
    """Training windows per step in each training process (times processes and ``gradient_accumulation_steps``:
    the effective batch)."""
    eval_batch_size: int = 16
    """Windows per forward pass in each process when evaluating and predicting."""
    gradient_accumulation_steps: int = 1
    """Batches whose gradients add up before each optimizer step."""
    max_steps: int = 1000
    """Optimizer steps; ``-1`` uses ``epochs``."""
    epochs: float = 1.0
    """Passes over the training windows when ``max_steps`` is ``-1`` (fractions allowed)."""
    warmup_ratio: float = 0.0
    """Share of the optimizer steps over which the learning rate rises linearly from 0, in [0, 1)."""
    lr_scheduler: str = "linear"
    """Learning-rate schedule after the warmup, any of the Trainer's (``linear`` decay to 0, ``cosine``,
    ``constant``, ...)."""
    seed: int = 42
    """Seed of the model's initial head weights, the data order, dropout and the AET views."""
    bf16: bool | None = None
    """bfloat16 mixed precision; ``None`` (default): on for GPUs that support it, fp32 on CPU."""
    tf32: bool | None = None
    """TF32 matmuls and convolutions; ``None`` (default): on for Ampere and newer GPUs, off elsewhere."""
    compile: bool = False
    """``torch.compile`` the transformer encoders of LayoutLMv3 and the aligners (first steps compile)."""
    compile_backend: str = "inductor"
    """``torch.compile`` backend (``inductor`` generates kernels; ``aot_eager`` only traces, for checks)."""
    gradient_checkpointing: bool = False
    """Activation checkpointing of the layers of LayoutLMv3 and both online aligners (not AET's momentum
    copies): their activations are recomputed in the backward pass, trading about one extra forward pass
    for memory; losses and gradients are unchanged. Any strategy, DDP and ``train.compile``."""
    logging_steps: int = 10
    """Log the loss terms and learning rate every N optimizer steps (``log.jsonl``, trackers, ``curves.png``)."""
    eval_strategy: str | None = None
    """Validation during training: ``steps`` (every ``eval_steps``), ``epoch`` or ``no``; unset means
    ``steps`` when ``eval_steps`` is given, else ``no``. The test split is scored once, at the end."""
    eval_steps: int | None = None
    """Evaluate on the validation split every N optimizer steps (``eval_strategy=steps``; default
    ``logging_steps``)."""
    keep: str = "last"
    """Model kept at the end (saved in ``model/`` and scored on test): ``last``, or ``best`` by the task's
    metric on the validation split (needs validation; then a checkpoint is saved at every evaluation)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations in a row without a better validation metric (needs validation)."""
    save_steps: int = 500
    """Checkpoint every N steps (with ``keep=best``: at every evaluation instead)."""
    save_total_limit: int = 2
    """Checkpoints kept in ``checkpoints/`` (older ones are deleted; with ``keep=best`` the best one stays too)."""
    num_workers: int | None = None
    """DataLoader worker processes per training process (decode pages, build AET views). They start with
    the first training epoch and are kept for the following ones (persistent; a resumed run starts a set
    for the resumed epoch, then one for the rest); batches are pinned in memory on a GPU. The weights are
    the same with any count, and after ``--resume``. ``None``: the ``AETNET_NUM_WORKERS`` environment variable
    when set, else ``min(8, cores / processes on this node)``; ``0``: in the training process. Validation passes
    start their own workers for each pass."""
    report_to: list[str] = field(default_factory=lambda: ["none"])
    """Trackers that receive the logs: ``none``, or any of the Trainer's (``tensorboard``, ``wandb``,
    ``mlflow``, ...; comma-separated on the command line). TensorBoard writes into ``RUN/tensorboard``."""

    def __post_init__(self) -> None:
        if self.eval_strategy is None:
            self.eval_strategy = "steps" if self.eval_steps is not None else "no"
        check_choice("train.eval_strategy", self.eval_strategy, ("steps", "epoch", "no"))
        check_choice("train.keep", self.keep, ("last", "best"))
        if self.eval_strategy == "steps" and self.eval_steps is None:
            self.eval_steps = self.logging_steps
        if self.eval_steps is not None and self.eval_strategy != "steps":
            raise AetnetError(f"train.eval_steps={self.eval_steps} needs train.eval_strategy=steps "
                              f"(it is {self.eval_strategy}); drop eval_steps or set eval_strategy=steps")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise AetnetError(f"train.eval_steps={self.eval_steps} must be a positive number of steps")
        needs = [name for name, on in (("keep=best", self.keep == "best"),
                                       ("early_stopping_patience", self.early_stopping_patience is not None)) if on]
        if needs and self.eval_strategy == "no":
            raise AetnetError(f"train.{needs[0]} needs validation during training: set train.eval_steps=N "
                              "(or train.eval_strategy=epoch)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise AetnetError(f"train.early_stopping_patience={self.early_stopping_patience} must be >= 1")
        self.report_to = [name.strip() for name in self.report_to if name.strip()] or ["none"]
        if "none" in self.report_to and len(self.report_to) > 1:
            raise AetnetError(f"train.report_to={','.join(self.report_to)}: 'none' cannot be combined with trackers")


@dataclass
class RelationsConfig:
    """Relation tasks (``funsd-re``, ``re``)."""

    protocol: str = "page"
    """Which pairs train and score (:mod:`aetnet.data.documents.relation_protocols`): ``page`` every candidate pair
    of a page (default); ``chunks`` the LayoutXLM/LiLT protocol (non-overlapping 512-token chunks);
    ``all-links`` every annotated link type with one-parent decoding (BROS/GeoLayoutLM)."""


#: Tasks that read ``relations``.
RELATION_TASKS = ("funsd-re", "re")

#: Tasks that read ``data.lang``.
LANG_TASKS = ("xfund", "xfund-re")
XFUND_LANGS = ("zh", "ja", "es", "fr", "it", "de", "pt", "all")

#: Tasks whose label set a user may fix with ``data.labels``.
OWN_LABEL_TASKS = ("token", "classify")


def strategy_sections() -> dict[str, type]:
    """The settings sections of the registered strategies (``aet``, ``lora``, ``prompt``, ...): name -> dataclass.

    Each strategy declares its sections where it registers (``aetnet/strategies/__init__.py``); the
    configuration learns them from :data:`aetnet.registry.STRATEGIES`.
    """
    sections = STRATEGIES.sections()
    clash = sorted(set(sections) & {f.name for f in dataclasses.fields(RunConfig)})
    if clash:
        raise AetnetError(f"a strategy registered the settings section '{clash[0]}', which is a field of every run; "
                          "give the section its strategy's name")
    return sections


def _default_sections() -> dict[str, Any]:
    return {name: settings() for name, settings in strategy_sections().items()}


@dataclass
class RunConfig:
    """Everything one fine-tuning run needs.

    The strategies' settings sections are read as attributes (``cfg.aet.alpha``, ``cfg.lora.r``) and stand beside
    the shared sections in recipes, ``key=value`` overrides and ``config.yaml``; they are held in
    :attr:`sections`, one instance of each registered section's dataclass.
    """

    task: str = "funsd"
    """Registered task (``funsd``, ``cord``, ``rvl-cdip``, ``docvqa``, ``funsd-re``, ``token``, ``classify``, ``qa``,
    ``re``, ``xfund``, ``xfund-re``)."""
    strategy: str = "full"
    """Registered tuning strategy (``full``, ``head``, ``aet``, ``lora``, ``aet-lora``, ``prompt``); its settings
    section (if any) is read, the others are kept as they are."""
    output: str | None = None
    """Run folder; ``None``: ``runs/<task>-<strategy>-<time>/``."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sections: dict[str, Any] = field(default_factory=_default_sections)
    """The registered strategies' settings sections by name (written as top-level sections, never as ``sections``)."""
    relations: RelationsConfig = field(default_factory=RelationsConfig)

    def __post_init__(self) -> None:
        from aetnet.data.documents.relation_protocols import PROTOCOLS

        check_choice("relations.protocol", self.relations.protocol, PROTOCOLS)
        if self.relations.protocol != "page" and self.task not in RELATION_TASKS:
            raise AetnetError(f"relations.protocol applies to the tasks {', '.join(RELATION_TASKS)}; task "
                              f"'{self.task}' has no links: remove relations.protocol")
        if self.data.lang is not None:
            check_choice("data.lang", self.data.lang, XFUND_LANGS)
            if self.task not in LANG_TASKS:
                raise AetnetError(f"data.lang (--lang) applies to the tasks {', '.join(LANG_TASKS)}; task "
                                  f"'{self.task}' has no languages to pick: remove it")
        if self.data.labels and self.task not in OWN_LABEL_TASKS:
            raise AetnetError(f"data.labels applies to the tasks {', '.join(OWN_LABEL_TASKS)}; task '{self.task}' has "
                              "a fixed label set: remove data.labels")

    def __getattr__(self, name: str) -> Any:
        """A strategy's settings section by name (``cfg.aet``); only called when no field has the name."""
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or settings section '{name}'")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe): the strategies' sections stand beside the shared ones."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sections":
                out.update({name: dataclasses.asdict(section) for name, section in value.items()})
            else:
                out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out

    def save(self, path: str | Path) -> None:
        """Write the resolved configuration as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def config_sections() -> dict[str, type]:
    """Every settings section of a run, name -> dataclass, in the order of ``config.yaml`` (shared and strategies')."""
    out: dict[str, type] = {}
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name == "sections":
            out.update(strategy_sections())
        elif dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = hints[f.name]
    return out


def build_run_config(values: dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from a nested dict (a recipe, ``config.yaml``), each strategy section built as its
    registered dataclass.

    Raises:
        AetnetError: an unknown key (listing the valid ones), a section that is not a mapping, or a value that does
            not match its field's type.
    """
    sections = strategy_sections()
    valid = [f.name for f in dataclasses.fields(RunConfig) if f.name != "sections"] + list(sections)
    for key in values:
        if key not in valid:
            raise AetnetError(f"unknown config key '{key}'; valid keys here: {', '.join(sorted(valid))}")
    built = {}
    for name, settings in sections.items():
        value = values.get(name, {})
        if not isinstance(value, dict):
            raise AetnetError(f"config section '{name}' must be a mapping")
        built[name] = build_dataclass(settings, value, prefix=f"{name}.")
    shared = {key: value for key, value in values.items() if key not in sections}
    return build_dataclass(RunConfig, shared, fixed={"sections": built})


def resolve_config(
    recipe: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Build a :class:`RunConfig` from a recipe dict, CLI flags (nested dict) and ``key=value`` strings."""
    merged: dict[str, Any] = {}
    for layer in (recipe or {}, flags or {}, parse_overrides(overrides or [])):
        merged = merge_nested(merged, layer)
    return build_run_config(merged)


def reads_validation(cfg: RunConfig) -> bool:
    """Whether the run scores the dataset's own validation split (readers may skip loading it otherwise)."""
    return cfg.train.eval_strategy != "no" and cfg.data.select_on == "validation"
