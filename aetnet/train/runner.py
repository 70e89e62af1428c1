"""One fine-tuning run, end to end: data -> windows -> model -> Trainer -> metrics and a model folder.

The run folder holds the resolved ``config.yaml``, ``metrics.json``, ``predictions.jsonl``,
``checkpoints/`` (Trainer checkpoints, for ``--resume``) and ``model/`` (``save_pretrained``
safetensors weights, processor and ``aetnet.json``), which :func:`load_model` and ``aetnet evaluate``
load back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aetnet.config import RunConfig, load_recipe_dict, resolve_config
from aetnet.data.encoding import Collator, WindowDataset
from aetnet.data.processor import load_processor
from aetnet.data.screen import BadDocuments, screen_documents
from aetnet.errors import AetnetError
from aetnet.registry import STRATEGIES, TASKS
from aetnet.threads import respect_omp_thread_limit
from aetnet.tuning.base import BasePaths, count_parameters

logger = logging.getLogger(__name__)

META_FILE = "aetnet.json"


def get_task(name: str):
    """An instance of the registered task ``name`` (importing the built-in tasks first)."""
    import aetnet.tasks  # noqa: F401  (registers the built-in tasks)

    return TASKS.get(name)()


def get_strategy(name: str):
    """An instance of the registered strategy ``name``."""
    import aetnet.tuning  # noqa: F401  (registers the built-in strategies)

    return STRATEGIES.get(name)()


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
    from aetnet.recipes_io import find_recipe

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


def run(cfg: RunConfig, demo: bool = False, resume: bool = False) -> Path:
    """Train and evaluate according to ``cfg``; returns the run folder."""
    from transformers import set_seed

    from aetnet.models.tiny import resolve_base
    from aetnet.train.trainer import build_trainer

    respect_omp_thread_limit()
    set_seed(cfg.train.seed)
    task = get_task(cfg.task)
    strategy = get_strategy(cfg.strategy)
    if hasattr(strategy, "check_config"):
        strategy.check_config(cfg)  # fail before reading and encoding the data
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    paths = BasePaths(*resolve_base(cfg.model.base, cfg.model.image_aligner, cfg.model.text_aligner))
    processor = load_processor(paths.layoutlmv3)
    policy = BadDocuments(cfg.data.on_bad_document)
    task.bad_documents = policy
    splits = task.load(cfg, demo=demo)
    train_ex, eval_ex = (
        screen_documents(ex, task.documents(ex), split, cfg.data.box_level, task.kind == "token", policy)
        for split, ex in (("train", _limit(splits.get("train", []), cfg.data.max_train_documents)),
                          ("eval", _limit(splits.get("eval", []), cfg.data.max_eval_documents)))
    )
    if not train_ex:
        raise AetnetError(f"no training documents found for {cfg.task} in {cfg.data.path or 'the demo'}")
    labels = task.label_list(splits)
    label2id = {label: i for i, label in enumerate(labels)} if labels else None
    train_windows = task.encode(train_ex, processor.tokenizer, label2id, cfg)

    run_dir = Path(cfg.output) if cfg.output else default_run_dir(cfg)
    cfg.output = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")

    model = strategy.build(task, cfg, paths, labels)
    views = strategy.extra_views(cfg, processor)
    with_ids = getattr(strategy, "uses_doc_ids", False) and cfg.aet.mask_same_document
    train_ds = WindowDataset(train_windows, task.documents(train_ex), processor.image_processor, views, with_ids)
    trainer = build_trainer(model, cfg, train_ds, processor, strategy.callbacks(model, cfg), run_dir)
    if hasattr(model, "on_train_data"):
        model.on_train_data(len(train_ds))
    start = time.perf_counter()
    checkpoint = _last_checkpoint(run_dir / "checkpoints") if resume else None
    if resume and checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", run_dir / "checkpoints")
    train_result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - start

    if not trainer.is_world_process_zero():
        return run_dir
    trainable, total = count_parameters(model)
    meta = {
        "task": cfg.task,
        "kind": task.kind,
        "strategy": cfg.strategy,
        "labels": labels,
        "box_level": cfg.data.box_level,
        "max_length": cfg.data.max_length,
        "stride": cfg.data.stride,
        "ocr": {"engine": "tesseract", "lang": cfg.data.ocr_lang, "psm": cfg.data.ocr_psm},
        "base": cfg.model.base,
    }
    model_dir = run_dir / "model"
    save_model(model, processor, model_dir, meta)
    metrics, records = evaluate_examples(model, processor, task, eval_ex, cfg, labels)
    metrics.update(
        {
            "train_loss": float(train_result.training_loss),
            "train_seconds": round(train_seconds, 3),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "step_time_s": round(train_seconds / max(1, trainer.state.global_step), 5),
            "peak_memory_mb": _peak_memory_mb(),
            "train_documents": len(train_ex),
            "eval_documents": len(eval_ex),
            "train_windows": len(train_windows),
            "world_size": trainer.args.world_size,
        }
    )
    metrics["skipped_documents"] = len(policy.records)
    write_outputs(run_dir, metrics, records)
    if hasattr(task, "write_extras"):  # task-specific files (RVL-CDIP: the confusion matrix)
        task.write_extras(run_dir, metrics, records)
    if policy.records:
        with open(run_dir / "skipped.jsonl", "w", encoding="utf-8") as fh:
            for record in policy.records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        logger.warning("%d document(s) skipped as bad input: %s", len(policy.records), run_dir / "skipped.jsonl")
    logger.info("%s %s: %s = %.4f; run folder %s", cfg.task, cfg.strategy, task.metric,
                metrics.get(task.metric, float("nan")), run_dir)
    return run_dir


def _limit(items: list, n: int | None) -> list:
    return items if n is None else items[:n]


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


def write_outputs(folder: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Write ``metrics.json`` and ``predictions.jsonl`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def save_model(model, processor, folder: Path, meta: dict[str, Any]) -> None:
    """``save_pretrained`` (safetensors) + processor + ``aetnet.json`` metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_inference"):
        model.save_inference(folder)
    else:
        model.save_pretrained(folder)
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


def load_model(path: str | Path) -> LoadedModel:
    """Load a run's ``model/`` folder (or an exported folder) with its processor and metadata."""
    path = Path(path)
    if (path / "model" / META_FILE).is_file():
        path = path / "model"
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise AetnetError(f"{path}: not an aetnet model folder (no {META_FILE}); pass RUN_DIR/model")
    meta = json.loads(meta_path.read_text())
    strategy = get_strategy(meta["strategy"])
    if hasattr(strategy, "load"):
        model = strategy.load(path, meta)
    else:
        from aetnet.tuning.base import load_task_model

        model = load_task_model(meta["kind"], str(path), None)
    model.eval()
    return LoadedModel(model, load_processor(str(path)), meta)


@torch.no_grad()
def predict_windows(model, dataset: WindowDataset, batch_size: int, kind: str, pad_token_id: int) -> list[Any]:
    """Run ``model`` over every window; per window, its logits as numpy (QA: (start, end))."""
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=Collator(pad_token_id))
    outputs: list[Any] = []
    for batch in loader:
        lengths = batch["attention_mask"].sum(1).tolist()
        batch = {k: v.to(device) for k, v in batch.items()
                 if k not in ("labels", "start_positions", "end_positions")}
        out = model(**batch)
        if kind == "qa":
            starts, ends = out["start_logits"].float().cpu().numpy(), out["end_logits"].float().cpu().numpy()
            outputs.extend((s[:n], e[:n]) for s, e, n in zip(starts, ends, lengths))
        elif kind == "sequence":
            outputs.extend(out["logits"].float().cpu().numpy())
        else:
            logits = out["logits"].float().cpu().numpy()
            outputs.extend(row[:n] for row, n in zip(logits, lengths))
    return outputs


def evaluate_examples(model, processor, task, examples, cfg: RunConfig, labels) -> tuple[dict, list]:
    """Encode ``examples`` (no labels needed in the model), predict, merge windows, score."""
    label2id = {label: i for i, label in enumerate(labels)} if labels else None
    windows = task.encode(examples, processor.tokenizer, label2id, cfg)
    dataset = WindowDataset(windows, task.documents(examples), processor.image_processor)
    outputs = predict_windows(model, dataset, cfg.train.eval_batch_size, task.kind,
                              processor.tokenizer.pad_token_id)
    id2label = dict(enumerate(labels)) if labels else {}
    metrics, records = task.evaluate(examples, windows, outputs, id2label)
    metrics = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}
    return metrics, records


def evaluate_model(model_dir: str | Path, data: str | None, output: str | Path | None = None,
                   demo: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """``aetnet evaluate``: load a model folder and score it on a dataset's evaluation split."""
    loaded = load_model(model_dir)
    meta = loaded.meta
    run_cfg = Path(model_dir).parent / "config.yaml"
    base: dict[str, Any] = {}
    if run_cfg.is_file():
        base = load_recipe_dict(run_cfg)
        base["output"] = None
    flags = {"task": meta["task"], "strategy": meta["strategy"],
             "data": {"box_level": meta["box_level"], "max_length": meta["max_length"], "stride": meta["stride"]}}
    if data:
        flags["data"]["path"] = data
    cfg = resolve_config(base, flags, overrides)
    task = get_task(meta["task"])
    splits = task.load(cfg, demo=demo)
    examples = _limit(splits.get("eval", []), cfg.data.max_eval_documents)
    metrics, records = evaluate_examples(loaded.model, loaded.processor, task, examples, cfg, meta["labels"])
    if output:
        write_outputs(Path(output), metrics, records)
        if hasattr(task, "write_extras"):
            task.write_extras(Path(output), metrics, records)
    return metrics
