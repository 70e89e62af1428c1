"""Tuning strategies: how a task model is built and which of its parameters train.

A strategy turns (task, config, base weights) into a model whose ``forward(**batch)`` returns the
loss (and, for AET, every loss term), plus optional dataset views and trainer callbacks. Each strategy is
registered once, with its settings sections, in the table of ``aetnet/strategies/__init__.py``
(:data:`aetnet.registry.STRATEGIES`), under the name ``--strategy`` accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from aetnet.bases import detect_family
from aetnet.config.settings import RunConfig
from aetnet.errors import AetnetError
from aetnet.models.heads import head_class
from aetnet.models.task_model import abilities

logger = logging.getLogger(__name__)

@dataclass
class BasePaths:
    """Resolved weights: LayoutLMv3 and the two aligners (hub ids or local folders)."""

    layoutlmv3: str
    image_aligner: str | None = None
    text_aligner: str | None = None


def load_task_model(kind: str, path: str, labels: list[str] | None, cfg: RunConfig | None = None) -> nn.Module:
    """``LayoutLMv3For...from_pretrained`` (or the head class of the base's family, e.g. ``LiltFor...``) with
    the label maps, and a clear error when it cannot load."""
    family = detect_family(path)
    cls = head_class(kind, family)
    kwargs: dict[str, Any] = {}
    if labels is not None:
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    if cfg is not None and cfg.model.dropout is not None:
        kwargs["hidden_dropout_prob"] = cfg.model.dropout
        kwargs["attention_probs_dropout_prob"] = cfg.model.dropout
    try:
        model = cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:  # HFValidationError is a ValueError
        raise AetnetError(
            f"could not load {family.name} weights '{path}' ({str(exc).splitlines()[0][:160]}); pass a local "
            "folder, `--base tiny` offline, or connect to the Hugging Face hub"
        ) from None
    if cfg is not None and cfg.model.train_relative_position_bias:
        if family.model_type != "layoutlmv3":
            raise AetnetError(f"model.train_relative_position_bias=true does nothing with a {family.name} base (it "
                              "has no relative-position bias tables); set it to false")
        from aetnet.models.relpos import train_relative_position_biases

        train_relative_position_biases(model)
    return model


class Strategy:
    """What a strategy offers, every hook with its default (full fine-tuning of LayoutLMv3 and its head).

    The runner (:mod:`aetnet.train.runner`) calls, in this order: :meth:`check_config` (before any data
    is read; ``aetnet compare`` calls it too, before any run starts), :meth:`extra_views` and
    :attr:`uses_doc_ids` (the training set), :meth:`build` (the model), :meth:`callbacks` (the
    Trainer's). Model loading (:func:`aetnet.inference.modelio.load_model`, hence evaluate, predict,
    serve, export and ``aetnet.load``) calls :meth:`load`. What the built model itself may offer
    (saving, parameter groups, merging adapters, ...) is :class:`aetnet.models.task_model.TaskModel`.
    A subclass overrides only what it changes and registers itself in
    :data:`aetnet.registry.STRATEGIES`.
    """

    #: The ``--strategy`` name (also saved as ``strategy`` in a model folder's ``aetnet.json``).
    name = "full"
    #: Whether the training items carry their document's index (``doc_ids``), for models that keep
    #: windows of one document apart (AET with ``aet.mask_same_document``). Default ``False``.
    uses_doc_ids: bool = False

    def check_config(self, cfg: RunConfig) -> None:
        """Reject settings the strategy cannot train with, before any data is read (one clear
        :class:`~aetnet.errors.AetnetError`). Default: nothing to check."""

    def build(self, task, cfg: RunConfig, paths: BasePaths, labels: list[str] | None, processor) -> nn.Module:
        """The model to train, with ``requires_grad`` set as the strategy wants.

        Args:
            task: the run's :class:`~aetnet.tasks.base.Task` (its ``kind`` picks the head).
            cfg: the run configuration.
            paths: the resolved base weights.
            labels: label names in id order (``None`` for QA).
            processor: the run's ``LayoutLMv3Processor``, loaded once by the runner (AET reads its image
                normalisation and the tokenizer's mask and special ids from it).
        """
        return load_task_model(task.kind, paths.layoutlmv3, labels, cfg)

    def extra_views(self, cfg: RunConfig, processor) -> Callable | None:
        """Extra per-item tensors the strategy's model needs (``None``: only the clean inputs)."""
        return None

    def callbacks(self, model: nn.Module, cfg: RunConfig) -> list:
        """Trainer callbacks (the epoch for the views, diagnostics, ...)."""
        return []

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Update the model right after each optimizer step, with the weights the optimizer just wrote.

        The trainer calls it once per optimizer step (after the last micro-batch of a gradient
        accumulation, on every rank under DDP), never during evaluation; ``model`` is the model
        :meth:`build` returned. AET: the EMA step of the momentum encoders. Default: nothing.
        """

    def load(self, path: str | Path, meta: dict[str, Any]) -> nn.Module:
        """The inference model saved in the model folder ``path`` (written by the model's
        ``save_inference``); ``meta`` is its ``aetnet.json``. Default: ``LayoutLMv3For...from_pretrained``."""
        return load_task_model(meta["kind"], str(path), None)


class FullStrategy(Strategy):
    """Every parameter of LayoutLMv3 and the head trains (the baseline)."""

    name = "full"


class HeadStrategy(Strategy):
    """Backbone frozen; only the task head trains (a floor for comparisons)."""

    name = "head"

    def build(self, task, cfg, paths, labels, processor):
        model = super().build(task, cfg, paths, labels, processor)
        backbone = detect_family(paths.layoutlmv3).backbone + "."
        for name, param in model.named_parameters():
            param.requires_grad = not name.startswith(backbone)
        return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """The parameter figures a run records in ``metrics.json``.

    Returns:
        ``trainable_parameters`` (what the optimizer updates), ``inference_parameters`` (what an
        export holds: for AET the fusion model and both aligners), ``training_only_parameters``
        (AET: momentum copies, projection heads, temperature and the queues' entries; 0 otherwise)
        and ``total_parameters`` = inference + training-only.
    """
    trainable, parameters = count_parameters(model)
    only_params, queue_values = abilities(model).training_only_numel()
    return {"trainable_parameters": trainable, "inference_parameters": parameters - only_params,
            "training_only_parameters": only_params + queue_values,
            "total_parameters": parameters + queue_values}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total

