"""Scoring a model on examples: encode, predict every window, merge windows, the task's metric.

The same code scores the test split after training, the validation split during training (called
by the Trainer at ``train.eval_steps``) and ``aetnet evaluate``. A split is scored as a stream: the windows
of :data:`EVAL_CHUNK` documents at a time are predicted (a document's windows are never split between two
chunks), then each document's windows are merged by the task's :class:`~aetnet.tasks.base.Scorer`, which
keeps only what the metric needs, and its prediction record is written to ``predictions.jsonl`` at once. So
the outputs of at most one chunk of documents (plus one batch) are alive, whatever the size of the split.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aetnet.config.settings import RunConfig, load_recipe_dict, resolve_config
from aetnet.data.documents.jsonl import jsonl_line, replaced_when_done
from aetnet.data.documents.screen import BadDocuments, screen_documents
from aetnet.data.encoding.store import WindowStore, encode_cached
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


#: Documents whose windows are predicted, then merged and scored, together: the outputs of at most this many
#: documents (and one batch of windows) are held at once while a split is scored.
EVAL_CHUNK = 64


def iter_window_outputs(model, dataset, batch_size: int, kind: str, pad_token_id: int,
                        num_workers: int = 0) -> Iterator[Any]:
    """Run ``model`` over every window of ``dataset``, in order; yields per window its logits as numpy (QA:
    (start, end)), one batch at a time.

    The model is in eval mode while the generator runs and is given back in the mode it came in when the
    generator ends or is closed. ``num_workers`` DataLoader processes decode the pages (0: this process).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=Collator(pad_token_id))
    try:
        for batch in loader:
            lengths = batch["attention_mask"].sum(1).tolist()
            if kind == "relation":  # one row per entity of the window, not per token
                lengths = (batch["entity_labels"] >= 0).sum(1).tolist()
            batch = {k: v.to(device) for k, v in batch.items()
                     if k not in TARGET_KEYS}
            with torch.no_grad():
                out = model(**batch)
                logits = {name: out[name].float().cpu().numpy() for name in output_names(kind)}
            yield from window_outputs(kind, logits, lengths)
    finally:
        model.train(was_training)


def predict_windows(model, dataset: WindowDataset, batch_size: int, kind: str, pad_token_id: int,
                    num_workers: int = 0) -> list[Any]:
    """Every window's outputs of :func:`iter_window_outputs`, as one list."""
    return list(iter_window_outputs(model, dataset, batch_size, kind, pad_token_id, num_workers))


def _rank_share(span: range, rank: int, world: int) -> range:
    """The windows of ``span`` that rank ``rank`` of ``world`` predicts (those ``≡ rank mod world``)."""
    return range(span.start + (rank - span.start) % world, span.stop, world)


_END = object()


def chunk_outputs(model, dataset, spans: Sequence[range], batch_size: int, kind: str, pad_token_id: int,
                  num_workers: int = 0, shared: bool = False) -> Iterator[list[Any]]:
    """Per window range of ``spans`` (consecutive, covering ``dataset`` in order), the outputs of its windows.

    One DataLoader runs through the windows; each range's outputs are yielded as a list as soon as they are
    all predicted. With ``shared`` in a distributed run, rank ``r`` of ``W`` predicts windows ``r, r + W, ...``
    and the outputs of each range are gathered to every rank in window order (every rank must iterate to
    the end together: each range holds a collective).
    """
    import torch.distributed as dist

    world = _world() if shared else 1
    rank = _rank() if world > 1 else 0
    mine = dataset if world == 1 else torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    with closing(iter_window_outputs(model, mine, batch_size, kind, pad_token_id, num_workers)) as outputs:
        for span in spans:
            part = list(islice(outputs, len(_rank_share(span, rank, world))))
            if world == 1:
                yield part
                continue
            parts: list[Any] = [None] * world
            dist.all_gather_object(parts, part)
            gathered: list[Any] = [None] * len(span)
            for r, got in enumerate(parts):
                first = _rank_share(span, r, world).start - span.start
                gathered[first::world] = got
            yield gathered
        if next(outputs, _END) is not _END:
            raise RuntimeError(f"the window ranges cover fewer than the {len(dataset)} windows")


def document_starts(windows: Sequence, n_documents: int) -> np.ndarray:
    """Where each document's windows start (``n_documents + 1`` offsets; document ``i`` has windows
    ``starts[i]:starts[i + 1]``, none when equal).

    Raises:
        RuntimeError: windows not in document order (every encoder writes them in order).
    """
    if isinstance(windows, WindowStore):
        doc_index = windows.doc_indices()
    else:
        doc_index = np.fromiter((w.doc_index for w in windows), dtype=np.int64, count=len(windows))
    if doc_index.size and (np.any(np.diff(doc_index) < 0) or doc_index[0] < 0 or doc_index[-1] >= n_documents):
        raise RuntimeError(f"the windows of {n_documents} documents are not in document order")
    return np.searchsorted(doc_index, np.arange(n_documents + 1), side="left")


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
            (:func:`chunk_outputs` with ``shared``; every process must score together). The validation during training
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
        self.starts = document_starts(self.windows, len(pages))

    @classmethod
    def from_prepared(cls, task, processor, windows, pages: list, cfg: RunConfig, labels: list[str] | None):
        """The distributed validation set of a process that did not read the examples: it predicts its
        share of ``windows`` (a window cache entry) and receives the metrics from the first process."""
        return cls(task, processor, None, cfg, labels, distributed=True, prepared=(windows, pages))

    def score(self, model, write: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """The metrics of ``model`` on these examples; ``write`` (when given) gets each example's prediction
        record, in order, as soon as its document is scored.

        The windows of :data:`EVAL_CHUNK` documents at a time are predicted, then scored document by
        document (:meth:`aetnet.tasks.base.Task.scorer`). In a distributed run the processes share the
        windows of each chunk; the first process scores them and sends the metrics to the others (which
        write no record).
        """
        from aetnet.data.encoding.windows import data_workers

        sharing = self.distributed and _world() > 1
        scoring = not sharing or _rank() == 0
        if scoring and self.examples is None:
            raise RuntimeError("EvalSet.from_prepared scores only in a distributed run's other processes")
        n_documents = len(self.starts) - 1
        firsts = range(0, n_documents, EVAL_CHUNK)
        spans = [range(int(self.starts[a]), int(self.starts[min(a + EVAL_CHUNK, n_documents)])) for a in firsts]
        scorer = self.task.scorer(dict(enumerate(self.labels)) if self.labels else {}) if scoring else None
        metrics, failure = None, None
        chunks = chunk_outputs(model, self.dataset, spans, self.cfg.train.eval_batch_size, self.task.kind,
                               self.processor.tokenizer.pad_token_id, data_workers(self.cfg.train.num_workers),
                               shared=sharing)
        with closing(chunks):
            for first, span, outputs in ((firsts[k], spans[k], out) for k, out in enumerate(chunks)):
                if scorer is None or failure is not None:
                    continue  # a process that does not score (or failed to) still predicts its share
                try:
                    self._score_chunk(scorer, first, span, outputs, write)
                except Exception as exc:
                    if not sharing:
                        raise
                    failure = exc  # the others wait in the gathers and the broadcast below: keep in step
        if scorer is not None and failure is None:
            try:
                metrics = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
                           for k, v in scorer.metrics().items()}
            except Exception as exc:
                if not sharing:
                    raise
                failure = exc
        if not sharing:
            return metrics
        import torch.distributed as dist

        box = [metrics if failure is None else _ScoringFailed(f"{type(failure).__name__}: {failure}")]
        dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        if isinstance(box[0], _ScoringFailed):
            raise AetnetError(f"the first process could not score the validation split ({box[0].reason}); "
                              "see its log")
        return box[0]

    def _score_chunk(self, scorer, first: int, span: range, outputs: list[Any],
                     write: Callable[[dict[str, Any]], Any] | None) -> None:
        """Score the documents of one chunk (from ``first``; windows ``span``, their ``outputs``)."""
        from aetnet.tasks.base import local_windows

        windows = self.windows[span.start: span.stop]
        for doc in range(first, min(first + EVAL_CHUNK, len(self.starts) - 1)):
            lo, hi = int(self.starts[doc]) - span.start, int(self.starts[doc + 1]) - span.start
            record = scorer.add(self.examples[doc], local_windows(windows[lo:hi]), outputs[lo:hi])
            if write is not None:
                write(record)

    def __call__(self, model) -> dict[str, float]:
        """The numeric metrics of ``model`` (what the Trainer logs at an evaluation; no record is written)."""
        metrics = self.score(model)
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextmanager
def records_file(path: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function writing one prediction record a line (JSON) to ``path``, as it comes.

    The lines go to ``path`` with a ``.partial`` suffix, renamed to ``path`` when the block ends without an
    error, so a scoring that failed half way leaves no ``predictions.jsonl`` that looks complete.
    """
    with replaced_when_done(path) as fh:
        yield lambda record: fh.write(jsonl_line(record))


def evaluate_examples(model, processor, task, examples, cfg: RunConfig, labels,
                      predictions: Path | None = None) -> dict[str, Any]:
    """Encode ``examples`` (no labels needed in the model), predict, merge windows, score; the metrics.

    With ``predictions`` (a ``predictions.jsonl`` path), each example's prediction record is written there as
    soon as it is scored (:func:`records_file`); without, the records are not kept.
    """
    evalset = EvalSet(task, processor, examples, cfg, labels)
    if predictions is None:
        return evalset.score(model)
    predictions.parent.mkdir(parents=True, exist_ok=True)
    with records_file(predictions) as write:
        return evalset.score(model, write)


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))


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
    predictions = Path(output) / "predictions.jsonl" if output else None
    metrics = evaluate_examples(loaded.model, loaded.processor, task, examples, cfg, meta["labels"], predictions)
    metrics["eval_split"] = getattr(splits, "eval_split", None) or "eval"  # which split (or carve-out) was scored
    accounting = policy.summary({"eval": len(examples)})
    logger.info("%s", accounting.pop("message"))
    metrics.update(accounting, skipped_documents=len(policy.records))
    if output:
        write_metrics(Path(output), metrics)
        task.write_extras(Path(output), metrics)  # task-specific files (a confusion matrix)
        if policy.records:
            policy.write(Path(output) / "skipped.jsonl")
    if policy.records:
        logger.warning("%d document(s) skipped as bad input%s", len(policy.records),
                       f": {Path(output) / 'skipped.jsonl'}" if output else " (pass --output to list them)")
    return metrics
