"""Scoring a model on examples: encode, predict every window, merge windows, the task's metric.

The same code scores the test split after training, the validation split during training (called
by the Trainer at ``train.eval_steps``) and ``aetnet evaluate``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aetnet.config.settings import RunConfig, load_recipe_dict, resolve_config
from aetnet.data.documents.jsonl import write_jsonl
from aetnet.data.documents.screen import BadDocuments, screen_documents
from aetnet.data.encoding.store import encode_cached
from aetnet.data.encoding.windows import Collator, WindowDataset
from aetnet.errors import AetnetError
from aetnet.inference.modelio import get_task, load_model
from aetnet.models.heads import output_names, window_outputs

logger = logging.getLogger(__name__)


def limit(items: list, n: int | None) -> list:
    """The first ``n`` items (all when ``n`` is None)."""
    return items if n is None else items[:n]


#: Batch keys only training reads (targets, and what pairs a page's windows in training).
TARGET_KEYS = ("labels", "start_positions", "end_positions", "relation_labels", "page_relation_labels",
               "entity_index", "entity_pages", "entity_primary")


@torch.no_grad()
def predict_windows(model, dataset: WindowDataset, batch_size: int, kind: str, pad_token_id: int,
                    num_workers: int = 0) -> list[Any]:
    """Run ``model`` over every window; per window, its logits as numpy (QA: (start, end)).

    The model is put in eval mode for the pass and given back in the mode it came in. ``num_workers``
    DataLoader processes decode the pages (0: this process).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=Collator(pad_token_id))
    outputs: list[Any] = []
    try:
        for batch in loader:
            lengths = batch["attention_mask"].sum(1).tolist()
            if kind == "relation":  # one row per entity of the window, not per token
                lengths = (batch["entity_labels"] >= 0).sum(1).tolist()
            batch = {k: v.to(device) for k, v in batch.items()
                     if k not in TARGET_KEYS}
            out = model(**batch)
            logits = {name: out[name].float().cpu().numpy() for name in output_names(kind)}
            outputs.extend(window_outputs(kind, logits, lengths))
    finally:
        model.train(was_training)
    return outputs


def predict_sharded(model, dataset, batch_size: int, kind: str, pad_token_id: int,
                    num_workers: int = 0) -> list[Any]:
    """:func:`predict_windows` shared by the processes of a distributed run.

    Rank ``r`` of ``W`` predicts windows ``r, r + W, ...``; the outputs are gathered to every rank in
    window order, so each window is predicted once and every rank scores the same metrics. Outside a
    distributed run it is :func:`predict_windows`. Every rank must call it (it holds a collective).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return predict_windows(model, dataset, batch_size, kind, pad_token_id, num_workers)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = predict_windows(model, torch.utils.data.Subset(dataset, range(rank, len(dataset), world)), batch_size,
                           kind, pad_token_id, num_workers) if rank < len(dataset) else []
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, mine)
    outputs: list[Any] = [None] * len(dataset)
    for r, part in enumerate(parts):
        for j, out in enumerate(part):
            outputs[r + j * world] = out
    return outputs


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _ScoringFailed:
    """What the first process broadcasts instead of the metrics when scoring failed there."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class EvalSet:
    """Examples encoded once for repeated scoring (the validation split is scored at every evaluation).

    Args:
        task: the run's task.
        processor: the LayoutLMv3 processor.
        examples: the examples to score.
        cfg: the run configuration (windows, eval batch size).
        labels: label names in id order (``None`` for QA).
        distributed: in a distributed run, share the windows among the processes
            (:func:`predict_sharded`; every process must score together). The validation during training
            does; the final test scoring runs on the main process alone.
        prepared: ``(windows, page images)`` already encoded (see :meth:`from_prepared`).
    """

    def __init__(self, task, processor, examples: list | None, cfg: RunConfig, labels: list[str] | None,
                 distributed: bool = False, prepared: tuple[Any, list] | None = None):
        self.task, self.processor, self.examples, self.cfg, self.labels = task, processor, examples, cfg, labels
        self.distributed = distributed
        if prepared is not None:  # windows and page images prepared by the node's main process; no examples
            self.windows, pages = prepared
        else:
            label2id = {label: i for i, label in enumerate(labels)} if labels else None
            self.windows = encode_cached(task.window_encoder(), examples, processor.tokenizer, label2id, cfg,
                                         desc="evaluation windows")
            pages = task.documents(examples)
        self.dataset = WindowDataset(self.windows, pages, processor.image_processor)

    @classmethod
    def from_prepared(cls, task, processor, windows, pages: list, cfg: RunConfig, labels: list[str] | None):
        """The distributed validation set of a process that did not read the examples: it predicts its
        share of ``windows`` (a window cache entry) and receives the metrics from the first process."""
        return cls(task, processor, None, cfg, labels, distributed=True, prepared=(windows, pages))

    def score(self, model) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(metrics, one prediction record per example) of ``model`` on these examples.

        In a distributed run the processes share the windows; the first process scores the gathered
        outputs and sends the metrics to the others (which get no records).
        """
        from aetnet.data.encoding.windows import data_workers

        sharing = self.distributed and _world() > 1
        predict = predict_sharded if sharing else predict_windows
        outputs = predict(model, self.dataset, self.cfg.train.eval_batch_size, self.task.kind,
                          self.processor.tokenizer.pad_token_id, data_workers(self.cfg.train.num_workers))
        if not sharing:
            return self._evaluate(outputs)
        import torch.distributed as dist

        metrics, records, failure = None, [], None
        if _rank() == 0:
            try:
                metrics, records = self._evaluate(outputs)
            except Exception as exc:  # the others wait in the broadcast below: tell them, then raise
                failure = exc
        box = [metrics if failure is None else _ScoringFailed(f"{type(failure).__name__}: {failure}")]
        dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        if isinstance(box[0], _ScoringFailed):
            raise AetnetError(f"the first process could not score the validation split ({box[0].reason}); "
                              "see its log")
        return box[0], records

    def _evaluate(self, outputs: list[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The task's metrics and records of these examples from the windows' ``outputs``."""
        if self.examples is None:
            raise RuntimeError("EvalSet.from_prepared scores only in a distributed run's other processes")
        id2label = dict(enumerate(self.labels)) if self.labels else {}
        metrics, records = self.task.evaluate(self.examples, self.windows, outputs, id2label)
        metrics = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}
        return metrics, records

    def __call__(self, model) -> dict[str, float]:
        """The numeric metrics of ``model`` (what the Trainer logs at an evaluation)."""
        metrics, _ = self.score(model)
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def evaluate_examples(model, processor, task, examples, cfg: RunConfig, labels) -> tuple[dict, list]:
    """Encode ``examples`` (no labels needed in the model), predict, merge windows, score."""
    return EvalSet(task, processor, examples, cfg, labels).score(model)


def write_outputs(folder: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Write ``metrics.json`` and ``predictions.jsonl`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    write_jsonl(folder / "predictions.jsonl", records)


def evaluate_model(model_dir: str | Path, data: str | None, output: str | Path | None = None,
                   demo: bool = False, overrides: list[str] | None = None,
                   revision: str | None = None) -> dict[str, Any]:
    """``aetnet evaluate``: load a model folder (or Hub id at ``revision``) and score it on a dataset's
    evaluation split."""
    from aetnet.inference.hub import resolve_model

    model_dir = resolve_model(model_dir, revision)
    loaded = load_model(model_dir)
    meta = loaded.meta
    run_cfg = Path(model_dir).parent / "config.yaml"
    base: dict[str, Any] = {}
    if run_cfg.is_file():
        base = load_recipe_dict(run_cfg)
        base["output"] = None
    flags = {"task": meta["task"], "strategy": meta["strategy"],
             "data": {"box_level": meta["box_level"], "max_length": meta["max_length"], "stride": meta["stride"]}}
    if meta.get("relations"):  # a relation model scores by the protocol it was trained with (overrides still win)
        flags["relations"] = {"protocol": meta["relations"].get("protocol", "page")}
    if data:
        flags["data"]["path"] = data
    cfg = resolve_config(base, flags, overrides)
    task = get_task(meta["task"])
    policy = BadDocuments(cfg.data.on_bad_document)  # as in finetune: error, or skip and list
    splits = task.load(cfg, demo=demo, bad_documents=policy)
    examples = limit(splits.get("eval", []), cfg.data.max_eval_documents)
    examples = screen_documents(examples, task.documents(examples), "eval", cfg.data.box_level, task.kind == "token",
                                policy)
    metrics, records = evaluate_examples(loaded.model, loaded.processor, task, examples, cfg, meta["labels"])
    metrics["eval_split"] = getattr(splits, "eval_split", None) or "eval"  # which split (or carve-out) was scored
    accounting = policy.summary({"eval": len(examples)})
    logger.info("%s", accounting.pop("message"))
    metrics.update(accounting, skipped_documents=len(policy.records))
    if output:
        write_outputs(Path(output), metrics, records)
        task.write_extras(Path(output), metrics, records)  # task-specific files (a confusion matrix)
        if policy.records:
            policy.write(Path(output) / "skipped.jsonl")
    if policy.records:
        logger.warning("%d document(s) skipped as bad input%s", len(policy.records),
                       f": {Path(output) / 'skipped.jsonl'}" if output else " (pass --output to list them)")
    return metrics
