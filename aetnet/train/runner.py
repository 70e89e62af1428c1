"""One fine-tuning run, end to end, as a short sequence of named stages.

:func:`run` reads as the recipe of a run: resolve the task and strategy -> load the data ->
encode the training windows -> prepare the run folder -> build the model -> train -> save the
model -> evaluate on the test split -> write the outputs. Each stage is a small function that
fills a :class:`RunContext`.

The run folder holds the resolved ``config.yaml``, ``metrics.json``, ``predictions.jsonl``,
``log.jsonl`` (every Trainer log: losses, learning rate, validation metrics), ``curves.png``,
``checkpoints/`` (Trainer checkpoints, for ``--resume``) and ``model/`` (``save_pretrained``
safetensors weights, processor and ``aetnet.json``), which :func:`load_model` and ``aetnet evaluate``
load back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aetnet.config.settings import RunConfig, load_recipe_dict, resolve_config
from aetnet.data.documents.document import page_images
from aetnet.data.documents.screen import BadDocuments, screen_documents
from aetnet.data.documents.stream import stream_documents
from aetnet.data.encoding.processor import load_processor  # noqa: F401  (re-exported: older imports use it)
from aetnet.data.encoding.store import encode_cached
from aetnet.data.encoding.windows import WindowDataset
from aetnet.data.encoding.xfund import ENTITY_TEXT_ENCODING, XFUND_TASKS
from aetnet.errors import AetnetError
from aetnet.inference.evaluation import (  # noqa: F401  (re-exported public names)
    EvalSet,
    evaluate_examples,
    evaluate_model,
    limit,
    predict_windows,
    write_outputs,
)
from aetnet.inference.modelio import (  # noqa: F401  (re-exported public names)
    META_FILE,
    LoadedModel,
    get_strategy,
    get_task,
    load_model,
    save_model,
)
from aetnet.strategies.base import BasePaths, parameter_counts
from aetnet.threads import respect_omp_thread_limit
from aetnet.train.curves import CURVES_FILE
from aetnet.train.distributed import local_main_first
from aetnet.train.prepared import prepared_data, take_prepared_data, training_dataset
from aetnet.train.tracking import LOG_FILE, write_log_file
from aetnet.train.validation import split_validation

logger = logging.getLogger(__name__)

def default_run_dir(cfg: RunConfig) -> Path:
    """``runs/<task>-<strategy>-<timestamp>`` in the working directory."""
    return Path("runs") / f"{cfg.task}-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


def finetune(
    task: str,
    *,
    recipe: str | Path | None = None,
    strategy: str | None = None,
    base: str | None = None,
    data: str | None = None,
    output: str | Path | None = None,
    demo: bool = False,
    resume: bool = False,
    overrides: list[str] | None = None,
) -> Path:
    """Fine-tune a task and return the run folder.

    Args:
        task: registered task name (``funsd``, ``cord``, ``rvl-cdip``, ``docvqa``).
        recipe: a built-in recipe name (``funsd/full``) or a YAML path; default ``<task>/<strategy>``.
        strategy: ``full``, ``aet``, ... (overrides the recipe).
        base: LayoutLMv3 hub id or folder, or ``tiny`` (overrides the recipe).
        data: dataset path or hub id.
        output: run folder (default ``runs/<task>-<strategy>-<time>``).
        demo: use the embedded demo data.
        resume: continue from the last checkpoint in the run folder.
        overrides: ``key=value`` strings (``train.max_steps=10``).
    """
    from aetnet.config.recipes import find_recipe

    flags: dict[str, Any] = {"task": task}
    if strategy:
        flags["strategy"] = strategy
    if base:
        flags.setdefault("model", {})["base"] = base
    if data:
        flags.setdefault("data", {})["path"] = data
    if output:
        flags["output"] = str(output)
    recipe_path = find_recipe(recipe, task, strategy or "full")
    recipe_dict = load_recipe_dict(recipe_path) if recipe_path else {}
    if recipe_dict.get("task", task) != task:
        raise AetnetError(f"recipe {recipe_path} is for task '{recipe_dict['task']}', not '{task}'")
    cfg = resolve_config(recipe_dict, flags, overrides)
    return run(cfg, demo=demo, resume=resume)


@dataclass
class RunContext:
    """What the stages of one run hand to each other (filled in stage order)."""

    cfg: RunConfig
    demo: bool = False
    resume: bool = False
    task: Any = None
    strategy: Any = None
    paths: BasePaths | None = None
    processor: Any = None
    policy: BadDocuments | None = None
    labels: list[str] | None = None
    train_ex: list = field(default_factory=list)  # (or a DocumentStream) emptied once the windows are encoded
    train_documents: int = 0
    eval_ex: list = field(default_factory=list)
    val_ex: list = field(default_factory=list)
    selection_split: str | None = None
    run_dir: Path | None = None
    train_windows: Sequence = field(default_factory=list)  # a WindowStore with data.window_cache
    train_ds: WindowDataset | None = None
    validator: EvalSet | None = None
    model: Any = None
    trainer: Any = None
    train_loss: float = float("nan")
    train_seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    eval_split: str = "eval"

    @property
    def label2id(self) -> dict[str, int] | None:
        return {label: i for i, label in enumerate(self.labels)} if self.labels else None


def run(cfg: RunConfig, demo: bool = False, resume: bool = False) -> Path:
    """Train and evaluate according to ``cfg``; returns the run folder."""
    ctx = RunContext(cfg, demo=demo, resume=resume)
    resolve_components(ctx)
    with local_main_first("data preparation") as node:  # OCR and caches once per node
        if node.received is not None:  # this node's main process prepared the data: read no document
            take_prepared_data(ctx, node.received)
        else:
            load_data(ctx)
            encode_training(ctx)
            node.publish(prepared_data(ctx))
    prepare_run_dir(ctx)
    build_model(ctx)
    train_model(ctx)
    if not ctx.trainer.is_world_process_zero():
        return ctx.run_dir
    save_run_model(ctx)
    evaluate_test(ctx)
    write_run_outputs(ctx)
    return ctx.run_dir


# ------------------------------------------------------------------------------------------ stages
def resolve_components(ctx: RunContext) -> None:
    """Seed, task, strategy (its config checks run before any data is read), base weights, processor."""
    from transformers import set_seed

    from aetnet.bases import detect_family
    from aetnet.models.tiny import resolve_base

    cfg = ctx.cfg
    respect_omp_thread_limit()
    set_seed(cfg.train.seed)
    ctx.task = get_task(cfg.task)
    ctx.strategy = get_strategy(cfg.strategy)
    if hasattr(ctx.strategy, "check_config"):
        ctx.strategy.check_config(cfg)  # fail before reading and encoding the data
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    ctx.paths = BasePaths(*resolve_base(cfg.model.base, cfg.model.image_aligner, cfg.model.text_aligner))
    ctx.processor = load_processor(ctx.paths.layoutlmv3)
    detect_family(ctx.paths.layoutlmv3).check_strategy(cfg.strategy)  # e.g. aet needs an image stream


def load_data(ctx: RunContext) -> None:
    """Read the task's splits, set the validation split apart, screen bad documents, fix the label set."""
    cfg, task = ctx.cfg, ctx.task
    ctx.policy = BadDocuments(cfg.data.on_bad_document)
    task.bad_documents = ctx.policy
    splits = task.load(cfg, demo=ctx.demo)
    ctx.eval_split = getattr(splits, "eval_split", None) or "eval"  # which split (or carve-out) is scored
    train, validation, ctx.selection_split = split_validation(cfg, task, splits)

    def screened(split: str, examples: list, n: int | None) -> list:
        if stream_documents(examples):  # screened by its reader's scan, within the reader's data.max_*_documents
            if n is not None and examples.count > n:
                raise AetnetError(f"the {split} stream holds {examples.count} documents, beyond data.max_{split}_"
                                  f"documents={n}; the task's reader must apply the limit")
            return examples
        return screen_documents(limit(examples, n), task.documents(limit(examples, n)), split, cfg.data.box_level,
                                task.kind == "token", ctx.policy)

    ctx.train_ex = screened("train", train, cfg.data.max_train_documents)
    ctx.eval_ex = screened("eval", splits.get("eval", []), cfg.data.max_eval_documents)
    selecting_on_test = ctx.selection_split is not None and cfg.data.select_on == "test"
    ctx.val_ex = ctx.eval_ex if selecting_on_test else screened("validation", validation, cfg.data.max_eval_documents)
    if ctx.selection_split and not ctx.val_ex:
        raise AetnetError(f"train.eval_strategy={cfg.train.eval_strategy}: the validation split "
                          f"({ctx.selection_split}) is empty; raise data.val_fraction or set train.eval_strategy=no")
    if not ctx.train_ex:
        raise AetnetError(f"no training documents found for {cfg.task} in {cfg.data.path or 'the demo'}")
    ctx.labels = task.label_list(splits)


def prepare_run_dir(ctx: RunContext) -> None:
    """Create the run folder and save the resolved configuration in it."""
    cfg = ctx.cfg
    ctx.run_dir = Path(cfg.output) if cfg.output else default_run_dir(cfg)
    cfg.output = str(ctx.run_dir)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(ctx.run_dir / "config.yaml")


def encode_training(ctx: RunContext) -> None:
    """Training examples -> windows (through the on-disk window cache) -> the dataset the Trainer reads (with
    the strategy's extra views); the validation windows too."""
    cfg, task = ctx.cfg, ctx.task
    ctx.train_windows = encode_cached(task.window_encoder(), ctx.train_ex, ctx.processor.tokenizer, ctx.label2id, cfg,
                                      desc="training windows")
    if stream_documents(ctx.train_ex):  # read on demand: its scan kept the page references and the count
        pages, ctx.train_documents = ctx.train_ex.pages, ctx.train_ex.count
    else:
        pages, ctx.train_documents = page_images(task.documents(ctx.train_ex)), len(ctx.train_ex)
    ctx.train_ds = training_dataset(ctx, ctx.train_windows, pages)
    # From here on training needs the windows and one image reference per page, not the Documents (words,
    # boxes, labels): released, so that neither this process nor its DataLoader workers hold them.
    ctx.train_ex = []
    if ctx.selection_split:  # encoded here too, so that only the node's main process builds its cache entry
        ctx.validator = EvalSet(task, ctx.processor, ctx.val_ex, cfg, ctx.labels, distributed=True)


def build_model(ctx: RunContext) -> None:
    """The strategy builds the model for the task and its labels."""
    ctx.model = ctx.strategy.build(ctx.task, ctx.cfg, ctx.paths, ctx.labels)
    if ctx.cfg.model.train_relative_position_bias:
        from aetnet.models.relpos import check_tables_train

        check_tables_train(ctx.model, ctx.cfg.strategy)


def train_model(ctx: RunContext) -> None:
    """Build the Trainer and train (from the last checkpoint with ``--resume``)."""
    from aetnet.train.trainer import build_trainer

    cfg, model = ctx.cfg, ctx.model
    ctx.trainer = build_trainer(model, cfg, ctx.train_ds, ctx.processor, ctx.strategy.callbacks(model, cfg),
                                ctx.run_dir, validator=ctx.validator, metric=ctx.task.metric)
    if hasattr(model, "on_train_data"):
        model.on_train_data(len(ctx.train_ds))
    checkpoint = _last_checkpoint(ctx.run_dir / "checkpoints") if ctx.resume else None
    if ctx.resume and checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", ctx.run_dir / "checkpoints")
    start = time.perf_counter()
    result = ctx.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    ctx.train_seconds = time.perf_counter() - start
    ctx.train_loss = float(result.training_loss)


def save_run_model(ctx: RunContext) -> None:
    """Write ``model/``: weights, processor and the metadata that loading needs."""
    cfg = ctx.cfg
    meta = {
        "task": cfg.task,
        "kind": ctx.task.kind,
        "strategy": cfg.strategy,
        "labels": ctx.labels,
        "box_level": cfg.data.box_level,
        "max_length": cfg.data.max_length,
        "stride": cfg.data.stride,
        "ocr": {"engine": "tesseract", "lang": cfg.data.ocr_lang, "psm": cfg.data.ocr_psm},
        "base": cfg.model.base,
        # how words became tokens in training: word by word, or each XFUND entity's text whole
        "encoding": ENTITY_TEXT_ENCODING if cfg.task in XFUND_TASKS else "words",
    }
    if hasattr(ctx.task, "relation_meta"):  # relation tasks: entity types and candidate rule
        meta["relations"] = ctx.task.relation_meta()
    save_model(ctx.model, ctx.processor, ctx.run_dir / "model", meta)


def evaluate_test(ctx: RunContext) -> None:
    """Score the kept model once on the evaluation split; add the run's cost figures to the metrics."""
    cfg, trainer = ctx.cfg, ctx.trainer
    metrics, ctx.records = evaluate_examples(ctx.model, ctx.processor, ctx.task, ctx.eval_ex, cfg, ctx.labels)
    metrics.update(parameter_counts(ctx.model))
    metrics.update(
        {
            "train_loss": ctx.train_loss,
            "train_seconds": round(ctx.train_seconds, 3),
            "step_time_s": round(ctx.train_seconds / max(1, trainer.state.global_step), 5),
            "peak_memory_mb": _peak_memory_mb(),
            "train_documents": ctx.train_documents,
            "eval_documents": len(ctx.eval_ex),
            "eval_split": ctx.eval_split,
            "train_windows": len(ctx.train_windows),
            "world_size": trainer.args.world_size,
            "demo_data": ctx.demo,  # trained on aetnet's synthetic demo pages (the model card's data terms)
            **getattr(trainer, "efficiency", {}),  # train_precision, tf32, attn_implementation, compile
        }
    )
    metrics["skipped_documents"] = len(ctx.policy.records)
    accounting = ctx.policy.summary(used_counts(ctx))
    metrics.update({key: value for key, value in accounting.items() if key != "message"})
    metrics.update(selection_metrics(ctx))
    ctx.metrics = metrics


def used_counts(ctx: RunContext) -> dict[str, int]:
    """Documents used per split (validation counted apart unless it is the test split itself)."""
    used = {"train": ctx.train_documents, "eval": len(ctx.eval_ex)}
    if ctx.val_ex and ctx.cfg.data.select_on != "test":
        used["validation"] = len(ctx.val_ex)
    return used


def selection_metrics(ctx: RunContext) -> dict[str, Any]:
    """Which split selected the kept model, the validation-selected step and its score, early stop."""
    cfg, state = ctx.cfg, ctx.trainer.state
    best_step = state.best_global_step or None
    stopped = bool(cfg.train.early_stopping_patience) and state.global_step < state.max_steps
    return {
        "selection_split": ctx.selection_split,
        "validation_documents": len(ctx.val_ex),
        "keep": cfg.train.keep,
        "trained_steps": state.global_step,
        "kept_step": best_step if cfg.train.keep == "best" and best_step else state.global_step,
        "best_step": best_step,
        f"best_validation_{ctx.task.metric}": state.best_metric,
        "stopped_early": stopped,
    }


def write_run_outputs(ctx: RunContext) -> None:
    """``metrics.json``, ``predictions.jsonl``, ``log.jsonl``, ``curves.png``, the task's extra files and
    ``skipped.jsonl``."""
    from aetnet.train.curves import plot_curves

    run_dir, task, metrics = ctx.run_dir, ctx.task, ctx.metrics
    write_outputs(run_dir, metrics, ctx.records)
    write_log_file(run_dir / LOG_FILE, ctx.trainer.state.log_history)
    plot_curves(ctx.trainer.state.log_history, run_dir / CURVES_FILE, task.metric,
                title=f"{ctx.cfg.task} {ctx.cfg.strategy}")
    task.write_extras(run_dir, metrics, ctx.records)  # task-specific files (a confusion matrix)
    if ctx.policy.records:
        ctx.policy.write(run_dir / "skipped.jsonl")
        logger.warning("%d document(s) skipped as bad input: %s", len(ctx.policy.records), run_dir / "skipped.jsonl")
    logger.info("%s", ctx.policy.summary(used_counts(ctx))["message"])
    logger.info("%s %s: %s = %.4f; run folder %s", ctx.cfg.task, ctx.cfg.strategy, task.metric,
                metrics.get(task.metric, float("nan")), run_dir)


# ----------------------------------------------------------------------------------------- helpers
def _last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    last = get_last_checkpoint(str(folder))
    return Path(last) if last else None


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
