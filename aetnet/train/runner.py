"""One fine-tuning run, end to end, as a short sequence of named stages.

:func:`run` reads as the recipe of a run: resolve the task and strategy -> load the data ->
encode the training windows -> prepare the run folder -> build the model -> train -> save the
model -> evaluate on the test split -> write the outputs. Each stage is a small function that
returns what it produces (a small frozen dataclass where several values go together), and the next
stages take it as arguments: nothing is handed over by writing into a shared object.

The run folder holds the resolved ``config.yaml``, ``metrics.json``, ``predictions.jsonl``,
``log.jsonl`` (every Trainer log: losses, learning rate, validation metrics), ``curves.png``,
``checkpoints/`` (Trainer checkpoints, for ``--resume``) and ``model/`` (``save_pretrained``
safetensors weights, processor and ``aetnet.json``), which :func:`load_model` and ``aetnet evaluate``
load back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aetnet.config.settings import RunConfig, load_recipe_dict, resolve_config
from aetnet.data.documents.document import page_images
from aetnet.data.documents.screen import BadDocuments, screen_documents
from aetnet.data.documents.stream import stream_documents
from aetnet.data.encoding.processor import load_processor
from aetnet.data.encoding.store import encode_cached
from aetnet.errors import AetnetError
from aetnet.inference.evaluation import EvalSet, evaluate_examples, limit, write_metrics
from aetnet.inference.modelio import get_strategy, get_task, save_model
from aetnet.models.task_model import abilities
from aetnet.strategies.base import BasePaths, parameter_counts
from aetnet.tasks.base import Task
from aetnet.threads import respect_omp_thread_limit
from aetnet.train.curves import CURVES_FILE
from aetnet.train.distributed import local_main_first
from aetnet.train.prepared import (
    Components,
    RunData,
    TrainingSet,
    prepared_data,
    take_prepared_data,
    training_dataset,
)
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


@dataclass(frozen=True)
class Trained:
    """The outcome of :func:`train_model`: the Trainer (its state and log), the mean training loss and
    the seconds training took."""

    trainer: Any
    loss: float
    seconds: float


@dataclass(frozen=True)
class Scored:
    """The kept model's metrics (with the run's cost figures) and the ``predictions.jsonl`` its scoring wrote
    (one prediction record per test example, written as each was scored)."""

    metrics: dict[str, Any]
    predictions: Path


def run(cfg: RunConfig, demo: bool = False, resume: bool = False) -> Path:
    """Train and evaluate according to ``cfg``; returns the run folder."""
    parts = resolve_components(cfg)
    with local_main_first("data preparation") as node:  # OCR and caches once per node
        if node.received is not None:  # this node's main process prepared the data: read no document
            data, training, validator = take_prepared_data(cfg, parts, node.received)
        else:
            data = load_data(cfg, parts.task, demo)
            training = encode_training(cfg, parts, data)
            data = data.without_training_examples()
            validator = validation_set(cfg, parts, data)
            node.publish(prepared_data(parts.task, data, training, validator))
    run_dir = prepare_run_dir(cfg)
    model = build_model(cfg, parts, data.labels)
    trained = train_model(cfg, parts, model, training, validator, run_dir, resume)
    if not trained.trainer.is_world_process_zero():
        return run_dir
    save_run_model(cfg, parts, model, data.labels, run_dir)
    scored = evaluate_test(cfg, parts, model, data, training, trained, run_dir, demo)
    write_run_outputs(cfg, parts.task, run_dir, scored, data, training, trained)
    return run_dir


# ------------------------------------------------------------------------------------------ stages
def resolve_components(cfg: RunConfig) -> Components:
    """Seed, task, strategy (its config checks run before any data is read), base weights, processor."""
    from transformers import set_seed

    from aetnet.bases import detect_family
    from aetnet.models.tiny import resolve_base

    respect_omp_thread_limit()
    set_seed(cfg.train.seed)
    task = get_task(cfg.task)
    strategy = get_strategy(cfg.strategy)
    strategy.check_config(cfg)  # fail before reading and encoding the data
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    paths = BasePaths(*resolve_base(cfg.model.base, cfg.model.image_aligner, cfg.model.text_aligner))
    processor = load_processor(paths.layoutlmv3)
    detect_family(paths.layoutlmv3).check_strategy(cfg.strategy)  # e.g. aet needs an image stream
    return Components(task, strategy, paths, processor)


def load_data(cfg: RunConfig, task: Task, demo: bool = False) -> RunData:
    """Read the task's splits, set the validation split apart, screen bad documents, fix the label set."""
    bad_documents = BadDocuments(cfg.data.on_bad_document)
    splits = task.load(cfg, demo=demo, bad_documents=bad_documents)
    eval_split = getattr(splits, "eval_split", None) or "eval"  # which split (or carve-out) is scored
    train, validation, selection_split = split_validation(cfg, task, splits)

    def screened(split: str, examples: list, n: int | None) -> list:
        if stream_documents(examples):  # screened by its reader's scan, within the reader's data.max_*_documents
            if n is not None and examples.count > n:
                raise AetnetError(f"the {split} stream holds {examples.count} documents, beyond data.max_{split}_"
                                  f"documents={n}; the task's reader must apply the limit")
            return examples
        return screen_documents(limit(examples, n), task.documents(limit(examples, n)), split, cfg.data.box_level,
                                task.kind == "token", bad_documents)

    train_ex = screened("train", train, cfg.data.max_train_documents)
    eval_ex = screened("eval", splits.get("eval", []), cfg.data.max_eval_documents)
    selecting_on_test = selection_split is not None and cfg.data.select_on == "test"
    val_ex = eval_ex if selecting_on_test else screened("validation", validation, cfg.data.max_eval_documents)
    if selection_split and not val_ex:
        raise AetnetError(f"train.eval_strategy={cfg.train.eval_strategy}: the validation split "
                          f"({selection_split}) is empty; raise data.val_fraction or set train.eval_strategy=no")
    if not train_ex:
        raise AetnetError(f"no training documents found for {cfg.task} in {cfg.data.path or 'the demo'}")
    return RunData(train_ex, eval_ex, val_ex, task.label_list(splits), selection_split, eval_split, bad_documents)


def prepare_run_dir(cfg: RunConfig) -> Path:
    """Create the run folder and save the resolved configuration in it (``output`` naming the folder)."""
    run_dir = Path(cfg.output) if cfg.output else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    replace(cfg, output=str(run_dir)).save(run_dir / "config.yaml")
    return run_dir


def encode_training(cfg: RunConfig, parts: Components, data: RunData) -> TrainingSet:
    """Training examples -> windows (through the on-disk window cache) -> the dataset the Trainer reads (with
    the strategy's extra views)."""
    task = parts.task
    windows = encode_cached(task.window_encoder(), data.train, parts.processor.tokenizer, data.label2id, cfg,
                            desc="training windows")
    if stream_documents(data.train):  # read on demand: its scan kept the page references and the count
        pages, documents = data.train.pages, data.train.count
    else:
        pages, documents = page_images(task.documents(data.train)), len(data.train)
    return TrainingSet(training_dataset(cfg, parts, windows, pages), windows, documents)


def validation_set(cfg: RunConfig, parts: Components, data: RunData) -> EvalSet | None:
    """The validation windows, when the run validates (encoded here, so that only the node's main process
    builds their cache entry)."""
    if not data.selection_split:
        return None
    return EvalSet(parts.task, parts.processor, data.validation, cfg, data.labels, distributed=True)


def build_model(cfg: RunConfig, parts: Components, labels: list[str] | None) -> nn.Module:
    """The strategy builds the model for the task and its labels."""
    model = parts.strategy.build(parts.task, cfg, parts.paths, labels, parts.processor)
    if cfg.model.train_relative_position_bias:
        from aetnet.models.relpos import check_tables_train

        check_tables_train(model, cfg.strategy)
    return model


def train_model(cfg: RunConfig, parts: Components, model: nn.Module, training: TrainingSet,
                validator: EvalSet | None, run_dir: Path, resume: bool = False) -> Trained:
    """Build the Trainer and train (from the last checkpoint with ``--resume``)."""
    from aetnet.train.trainer import build_trainer

    trainer = build_trainer(model, cfg, training.dataset, parts.processor, parts.strategy.callbacks(model, cfg),
                            run_dir, validator=validator, metric=parts.task.metric,
                            after_optimizer_step=parts.strategy.after_optimizer_step)
    abilities(model).on_train_data(len(training.dataset))
    checkpoint = _last_checkpoint(run_dir / "checkpoints") if resume else None
    if resume and checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", run_dir / "checkpoints")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return Trained(trainer, float(result.training_loss), time.perf_counter() - start)


def save_run_model(cfg: RunConfig, parts: Components, model: nn.Module, labels: list[str] | None,
                   run_dir: Path) -> None:
    """Write ``model/``: weights, processor and the metadata that loading needs."""
    meta = {
        "task": cfg.task,
        "kind": parts.task.kind,
        "strategy": cfg.strategy,
        "labels": labels,
        "box_level": cfg.data.box_level,
        "max_length": cfg.data.max_length,
        "stride": cfg.data.stride,
        "ocr": {"engine": "tesseract", "lang": cfg.data.ocr_lang, "psm": cfg.data.ocr_psm},
        "base": cfg.model.base,
        # how words became tokens in training: word by word, or each XFUND entity's text whole
        "encoding": parts.task.encoding,
    }
    relations = parts.task.relation_meta()
    if relations is not None:  # relation tasks: entity types and candidate rule
        meta["relations"] = relations
    save_model(model, parts.processor, run_dir / "model", meta)


def evaluate_test(cfg: RunConfig, parts: Components, model: nn.Module, data: RunData, training: TrainingSet,
                  trained: Trained, run_dir: Path, demo: bool = False) -> Scored:
    """Score the kept model once on the evaluation split, writing ``run_dir/predictions.jsonl`` as the
    documents are scored; add the run's cost figures to the metrics."""
    trainer = trained.trainer
    predictions = run_dir / "predictions.jsonl"
    metrics = evaluate_examples(model, parts.processor, parts.task, data.eval, cfg, data.labels, predictions)
    metrics.update(parameter_counts(model))
    metrics.update(
        {
            "train_loss": trained.loss,
            "train_seconds": round(trained.seconds, 3),
            "step_time_s": round(trained.seconds / max(1, trainer.state.global_step), 5),
            "peak_memory_mb": _peak_memory_mb(),
            "train_documents": training.documents,
            "eval_documents": len(data.eval),
            "eval_split": data.eval_split,
            "train_windows": len(training.windows),
            "world_size": trainer.args.world_size,
            "demo_data": demo,  # trained on aetnet's synthetic demo pages (the model card's data terms)
            **trainer.efficiency,  # train_precision, tf32, attn_implementation, compile
        }
    )
    metrics["skipped_documents"] = len(data.bad_documents.records)
    accounting = data.bad_documents.summary(used_counts(cfg, data, training))
    metrics.update({key: value for key, value in accounting.items() if key != "message"})
    metrics.update(selection_metrics(cfg, parts.task, data, trainer.state))
    return Scored(metrics, predictions)


def used_counts(cfg: RunConfig, data: RunData, training: TrainingSet) -> dict[str, int]:
    """Documents used per split (validation counted apart unless it is the test split itself)."""
    used = {"train": training.documents, "eval": len(data.eval)}
    if data.validation and cfg.data.select_on != "test":
        used["validation"] = len(data.validation)
    return used


def selection_metrics(cfg: RunConfig, task: Task, data: RunData, state) -> dict[str, Any]:
    """Which split selected the kept model, the validation-selected step and its score, early stop
    (``state``: the Trainer's state after training)."""
    best_step = state.best_global_step or None
    stopped = bool(cfg.train.early_stopping_patience) and state.global_step < state.max_steps
    return {
        "selection_split": data.selection_split,
        "validation_documents": len(data.validation),
        "keep": cfg.train.keep,
        "trained_steps": state.global_step,
        "kept_step": best_step if cfg.train.keep == "best" and best_step else state.global_step,
        "best_step": best_step,
        f"best_validation_{task.metric}": state.best_metric,
        "stopped_early": stopped,
    }


def write_run_outputs(cfg: RunConfig, task: Task, run_dir: Path, scored: Scored, data: RunData,
                      training: TrainingSet, trained: Trained) -> None:
    """``metrics.json``, ``log.jsonl``, ``curves.png``, the task's extra files and ``skipped.jsonl``
    (``predictions.jsonl`` was written by :func:`evaluate_test`)."""
    from aetnet.train.curves import plot_curves

    metrics, history, bad = scored.metrics, trained.trainer.state.log_history, data.bad_documents
    write_metrics(run_dir, metrics)
    write_log_file(run_dir / LOG_FILE, history)
    plot_curves(history, run_dir / CURVES_FILE, task.metric, title=f"{cfg.task} {cfg.strategy}")
    task.write_extras(run_dir, metrics)  # task-specific files (a confusion matrix)
    if bad.records:
        bad.write(run_dir / "skipped.jsonl")
        logger.warning("%d document(s) skipped as bad input: %s", len(bad.records), run_dir / "skipped.jsonl")
    logger.info("%s", bad.summary(used_counts(cfg, data, training))["message"])
    logger.info("%s %s: %s = %.4f; run folder %s", cfg.task, cfg.strategy, task.metric,
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
