"""The Hugging Face Trainer, set up for aetnet runs.

The Trainer does the loop, distributed data parallelism, mixed precision, accumulation, checkpoints
and resuming. This module only adds what it lacks: the strategy's update right after each optimizer
step (AET's EMA of its momentum encoders, :meth:`AetnetTrainer.after_optimizer_step`), logging every
loss term the model returns (``task_loss``, ``ditc_loss``, ...) without a host-device sync outside
logging steps, a clear stop on non-finite losses, validation with the task's own metric (windows
merged per document) for the best checkpoint and early stopping, and the run's arguments (lean DDP,
fused AdamW, non-blocking batch copies, trackers).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from aetnet.config.settings import RunConfig
from aetnet.data.encoding.windows import Collator, data_workers
from aetnet.errors import AetnetError
from aetnet.models.task_model import abilities
from aetnet.train.efficiency import prepare_model, resolve_bf16
from aetnet.train.tracking import model_log_values

logger = logging.getLogger(__name__)

#: Model outputs logged (averaged over the logging interval); ``pita_coverage`` is the share of text
#: tokens PITA maps to a patch.
LOSS_TERMS = ("task_loss", "ditc_loss", "imc_loss", "glitc_loss", "pita_loss", "pita_coverage")


class NonFiniteLossError(AetnetError):
    """A loss term became NaN or infinite."""


class AetnetTrainer(Trainer):
    """Trainer that logs each loss term, stops clearly on a non-finite loss and validates with the task's
    own metric.

    The loss terms stay on the device between logging steps: every micro-batch adds them to
    running sums and marks, per term, the first step whose value was not finite, all with tensor
    arithmetic. They are read back (one transfer) only when the Trainer logs or saves a checkpoint,
    so a training step never waits for the GPU. A non-finite term then raises
    :class:`NonFiniteLossError` naming the term and the step where it first went bad; a checkpoint is
    never written after that step, so the last checkpoint in the run folder is a good one.

    One optimizer step, as the Trainer's loop runs it:

    1. for each of the ``gradient_accumulation_steps`` micro-batches: :meth:`compute_loss` (the model's
       forward, which for AET computes every loss term and enqueues the momentum features) and backward;
    2. gradient clipping and ``optimizer.step()``;
    3. :meth:`after_optimizer_step`: the strategy's update with the weights the optimizer just wrote
       (AET: the EMA step of the momentum encoders, :meth:`aetnet.strategies.aet.model.AETNetModel.momentum_update`);
    4. the learning-rate scheduler step, ``zero_grad``, then logging, checkpointing and validation.

    Args:
        validator: model -> {metric: value} on the validation split (an
            :class:`aetnet.inference.evaluation.EvalSet`); used by :meth:`evaluate`.
        after_optimizer_step: the strategy's post-step update,
            :meth:`aetnet.strategies.base.Strategy.after_optimizer_step`, called with the (unwrapped) model;
            ``None``: nothing runs after the optimizer step.
    """

    def __init__(self, *args, validator=None,
                 after_optimizer_step: Callable[[nn.Module], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.validator = validator
        self._after_optimizer_step = after_optimizer_step
        # The loop signals step 3 through the callback event it fires right after optimizer.step().
        self.add_callback(_OptimizerStepped(self))
        # Our models return a per-batch mean loss and never see ``num_items_in_batch``: the Trainer
        # must divide by the accumulation steps itself (and not rescale by the process count).
        self.model_accepts_loss_kwargs = False
        self._term_sums: dict[str, torch.Tensor] = {}
        self._first_bad: dict[str, torch.Tensor] = {}
        self._term_count = 0
        #: What the run's efficiency settings resolved to (``metrics.json``); set by :func:`build_trainer`.
        self.efficiency: dict[str, Any] = {}
        #: The training loaders this trainer made (the run's own, and the one resuming mid-epoch), whose
        #: persistent workers :meth:`release_data_workers` stops.
        self._train_loaders: list = []

    def after_optimizer_step(self) -> None:
        """Step 3 of an optimizer step: the strategy's update of the model, right after ``optimizer.step()``.

        Runs once per optimizer step (not per micro-batch under gradient accumulation), on every rank
        under DDP (each rank's replica holds the same new weights), before the scheduler step and before
        any checkpoint of this step is written; never during evaluation.
        """
        if self._after_optimizer_step is not None:
            self._after_optimizer_step(self.accelerator.unwrap_model(self.model))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs["loss"]
        if model.training:
            terms = {k: outputs[k] for k in LOSS_TERMS if k in outputs and outputs[k] is not None}
            terms.setdefault("task_loss", loss)
            self._accumulate_terms(terms)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _accumulate_terms(self, terms: dict[str, torch.Tensor]) -> None:
        """Add each 0-d term to its running sum on the device; remember the first non-finite step."""
        step = self.state.global_step + 1
        for name, value in terms.items():
            value = value.detach().float()
            if name not in self._term_sums:
                self._term_sums[name] = torch.zeros((), device=value.device)
                self._first_bad[name] = torch.full((), -1, dtype=torch.long, device=value.device)
            self._term_sums[name] += value
            first = self._first_bad[name]
            first.masked_fill_(~torch.isfinite(value) & (first < 0), step)
        self._term_count += 1

    def _read_terms(self, reset: bool = True) -> dict[str, float]:
        """Read the running term means back (one device-to-host transfer), check them, and reset.

        Args:
            reset: start new sums (logging); ``False`` only checks (before a checkpoint).

        Raises:
            NonFiniteLossError: a term was NaN or infinite at some step since the last read.
        """
        if not self._term_count:
            return {}
        names = list(self._term_sums)
        sums = torch.stack([self._term_sums[n] for n in names])
        firsts = torch.stack([self._first_bad[n] for n in names]).to(sums.dtype)
        values = torch.cat([sums, firsts]).tolist()  # the only host sync: at logging or saving steps
        means = {n: total / self._term_count for n, total in zip(names, values[: len(names)])}
        firsts = dict(zip(names, values[len(names):]))
        # Only the losses stop the run (a diagnostic such as pita_coverage is logged as it is).
        bad = [n for n in names if n.endswith("_loss") and (firsts[n] >= 0 or not math.isfinite(means[n]))]
        if bad:  # name the term that went bad first
            name = min(bad, key=lambda n: firsts[n] if firsts[n] >= 0 else math.inf)
            first = firsts[name]
            when = f"at step {int(first)}" if first >= 0 else f"by step {self.state.global_step}"
            raise NonFiniteLossError(
                f"the {name.replace('_loss', '')} loss became {means[name]} {when} (found at step "
                f"{self.state.global_step}); lower the learning rate or check the inputs (the last "
                "checkpoint in the run folder is intact)"
            )
        if reset:
            self._term_sums.clear()
            self._first_bad.clear()
            self._term_count = 0
        return means

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The LR schedule, with a warmup ratio (``warmup_steps`` in (0, 1)) turned into exact steps.

        Epoch schedules (``train.max_steps=-1``) only know their length here; the ratio becomes
        ``ceil(ratio * num_training_steps)`` steps, without the float noise that makes 0.1 * 300 round
        up to 31 in transformers' own conversion.
        """
        ratio = self.args.warmup_steps
        if 0 < ratio < 1:
            self.args.warmup_steps = warmup_steps(ratio, num_training_steps)
        return super().create_scheduler(num_training_steps, optimizer)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Score the model with the task's metric on the validation split (windows merged per document).

        Free of side effects on training: the model goes back to its mode, no EMA step or enqueue
        happens (the alignment losses run only in training mode), no augmentation is applied, and the
        random number generators are restored, so a run with evaluations trains exactly like one without.
        """
        if self.validator is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        start = time.perf_counter()
        rng = torch.random.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            scores = self.validator(self.model)
        finally:
            torch.random.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _get_train_sampler(self, train_dataset=None):
        """Relation tasks: batches that keep a page's windows together (:mod:`aetnet.data.encoding.page_batches`)."""
        from aetnet.data.encoding.page_batches import PageGroupedSampler
        from aetnet.data.encoding.store import WindowStore
        from aetnet.data.encoding.windows import WindowDataset

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not (isinstance(dataset, WindowDataset) and dataset.group_pages):
            return super()._get_train_sampler(train_dataset)
        windows = dataset.windows
        pages = windows.doc_indices() if isinstance(windows, WindowStore) else [w.doc_index for w in windows]
        return PageGroupedSampler(pages, self._train_batch_size, self.args.seed)

    def get_train_dataloader(self):
        """The Trainer's loader, drawing its workers' base seed from generators of its own.

        A torch DataLoader draws that seed from its ``generator`` whenever it creates an iterator, and
        from the global RNG (the one dropout uses) when it has none. Accelerate wraps the loader: a
        generator set on the wrapper only is never read by the iterator, so each new iterator shifted
        the global stream. With persistent workers the iterator is created once per loader rather than
        once per epoch, and a resumed process builds new loaders (one for the rest of the resumed epoch
        from ``skip_first_batches``, then the run's own for the next epoch): its global stream, hence
        its dropout masks, drifted from the uninterrupted run's after the first epoch boundary. With
        generators on the torch loader (read by its iterators) and on the wrapper (copied by
        ``skip_first_batches``), both seeded with ``seed``, the loaders never touch the global RNG:
        training is the same with any ``train.num_workers``, persistent or not, and after ``--resume``.
        The data never draws from a worker's global RNG (AET views use a generator seeded per item
        and epoch), so the worker seeds do not change the batches.
        """
        loader = super().get_train_dataloader()
        loader.generator = torch.Generator().manual_seed(self.args.seed)
        base = getattr(loader, "base_dataloader", None)  # accelerate's DataLoaderShard wraps a torch loader
        if base is not None:
            base.generator = torch.Generator().manual_seed(self.args.seed)
        self._train_loaders.append(loader)
        return loader

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """The Trainer's loader that skips the batches a resumed epoch already saw, kept for
        :meth:`release_data_workers`."""
        loader = super().get_resumed_dataloader(dataloader, num_batches)
        self._train_loaders.append(loader)
        return loader

    def train(self, *args, **kwargs):
        """The Trainer's ``train``; the persistent workers of its training loaders are stopped when it
        returns or fails (:meth:`release_data_workers`), whoever called it."""
        try:
            return super().train(*args, **kwargs)
        finally:
            self.release_data_workers()

    def release_data_workers(self) -> None:
        """Stop the persistent worker processes of the training loaders now (:meth:`train` does, as it ends).

        Left alone, a persistent loader's iterator lives until the garbage collector frees the trainer's
        reference cycles, the next time anything in the process calls ``gc.collect()`` (the Trainer does
        so as each training starts). The collector finalises the iterator's queues before the iterator,
        so the stop signal it sends never reaches its workers and it waits out a 5-second join timeout
        per worker (pytorch/pytorch#81794): 10 s at the start of the next run in the same process
        (``aetnet compare``, a notebook, a test session) with two workers.
        """
        for loader in self._train_loaders:
            stop_loader_workers(loader)
        self._train_loaders.clear()

    def _get_output_dir(self, trial) -> str:
        staging = getattr(self, "_staging_dir", None)
        return staging if staging else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into a staging folder, then rename it into place.

        A run killed while saving leaves at most a partial ``.partial/`` folder; every
        ``checkpoint-N`` in the run folder is complete, so ``--resume`` always finds a loadable one.
        The loss terms since the last logging step are checked first: no checkpoint is written after
        a non-finite loss.
        """
        self._read_terms(reset=False)
        final = super()._get_output_dir(trial)
        self._staging_dir = os.path.join(final, ".partial")
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            from transformers.trainer_utils import rotate_checkpoints

            name = f"checkpoint-{self.state.global_step}"
            src, dst = os.path.join(final, ".partial", name), os.path.join(final, name)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
            self._point_best_checkpoint(final, dst)
            rotate_checkpoints(output_dir=final, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()
        if not self.args.should_save and self.state.best_global_step:  # the other ranks load it at the end too
            self.state.best_model_checkpoint = os.path.join(final, f"checkpoint-{self.state.best_global_step}")

    def _point_best_checkpoint(self, final: str, saved: str) -> None:
        """The Trainer located the best checkpoint inside the staging folder: point it at the final one
        (in the state and in the saved ``trainer_state.json``, which ``--resume`` reads back)."""
        if not self.state.best_global_step:
            return
        best = os.path.join(final, f"checkpoint-{self.state.best_global_step}")
        if os.path.isdir(best):
            self.state.best_model_checkpoint = best
            self.state.save_to_json(os.path.join(saved, "trainer_state.json"))

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs or "train_loss" in logs:  # a logging step, or the end of training
            means = self._read_terms()
            if "loss" in logs:
                for name, mean in means.items():
                    logs[name] = round(mean, 6)
                logs.update(model_log_values(self.model))
        super().log(logs, *args, **kwargs)


def stop_loader_workers(loader) -> None:
    """Stop the worker processes a persistent-worker ``loader`` (a torch DataLoader, or accelerate's wrapper
    of one) keeps between epochs; a loader without live workers is left as it is. The next iteration of
    the loader would start new workers."""
    from accelerate.data_loader import DataLoaderAdapter
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    base = loader.base_dataloader if isinstance(loader, DataLoaderAdapter) else loader
    iterator = base._iterator  # torch keeps a persistent loader's iterator here (None otherwise)
    if isinstance(iterator, _MultiProcessingDataLoaderIter):
        iterator._shutdown_workers()  # what the iterator's __del__ would do, while its queues still work
        base._iterator = None


class _OptimizerStepped(TrainerCallback):
    """Calls :meth:`AetnetTrainer.after_optimizer_step` from the loop's ``on_optimizer_step`` event, which the
    Trainer fires right after ``optimizer.step()`` and before the scheduler step."""

    def __init__(self, trainer: AetnetTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.after_optimizer_step()


def warmup_steps(ratio: float, num_training_steps: int) -> int:
    """``ceil(ratio * num_training_steps)`` warmup steps (10 % of 300 steps is 30, not 31)."""
    return math.ceil(round(ratio * num_training_steps, 6))


def training_arguments(cfg: RunConfig, run_dir: Path, metric: str | None = None) -> TrainingArguments:
    """TrainingArguments from the run configuration.

    ``train.warmup_ratio`` gives exact warmup steps for a step schedule; for an epoch schedule
    (``max_steps=-1``) the ratio is handed on and converted once the Trainer knows the step count.

    Args:
        cfg: the run configuration.
        run_dir: the run folder (checkpoints go to ``run_dir/checkpoints``).
        metric: the task's headline metric (higher is better), which selects the best checkpoint and
            drives early stopping when the run validates during training.
    """
    t = cfg.train
    if not 0 <= t.warmup_ratio < 1:
        raise AetnetError(f"train.warmup_ratio={t.warmup_ratio} must lie in [0, 1) (0.1 warms up over 10 % of "
                          "the steps)")
    validating = t.eval_strategy != "no"
    if validating and metric is None:
        raise AetnetError("validation during training needs the task's metric (training_arguments(metric=...))")
    keep_best = t.keep == "best"
    workers = data_workers(t.num_workers)
    warmup = warmup_steps(t.warmup_ratio, t.max_steps) if t.max_steps > 0 else t.warmup_ratio
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_steps=t.max_steps,
        num_train_epochs=t.epochs,
        warmup_steps=warmup,
        lr_scheduler_type=t.lr_scheduler,
        seed=t.seed,
        bf16=resolve_bf16(t.bf16),
        logging_steps=t.logging_steps,
        save_strategy=t.eval_strategy if keep_best else "steps",
        save_steps=t.eval_steps if keep_best and t.eval_strategy == "steps" else t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        metric_for_best_model=f"eval_{metric}" if validating else None,
        greater_is_better=True if validating else None,
        load_best_model_at_end=keep_best,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives --resume
        report_to="none" if t.report_to == ["none"] else list(t.report_to),
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        # Workers live across epochs (no re-fork, no re-opened datasets per epoch); resuming stays exact
        # because the loader never draws from the global RNG (AetnetTrainer.get_train_dataloader).
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        # Every trainable parameter gets a gradient at every step (the gradient-less relative-position
        # tables are frozen by prepare_model), so DDP need not walk the graph for unused ones; and the
        # feature queues (buffers) are kept equal on every rank by the all-gather in enqueue, so they
        # need no broadcast at every forward (128 MiB per forward with a 65,536 queue).
        ddp_find_unused_parameters=False,
        ddp_broadcast_buffers=False,
        # HF's NaN filter reads the loss back at every step and silently replaces a NaN; the trainer's own
        # check reads the loss terms only at logging and saving steps and stops on a NaN.
        logging_nan_inf_filter=False,
        # Batches (the AET views included) go to the GPU from pinned memory without blocking the host.
        accelerator_config={"non_blocking": True},
        optim="adamw_torch_fused",
        disable_tqdm=False,
    )


def build_trainer(model, cfg: RunConfig, train_dataset, processor, callbacks, run_dir: Path,
                  validator=None, metric: str | None = None,
                  after_optimizer_step: Callable[[nn.Module], None] | None = None) -> AetnetTrainer:
    """An :class:`AetnetTrainer` for the run (optimizer from the model's param groups when it has them).

    Args:
        after_optimizer_step: the strategy's update right after each optimizer step
            (:meth:`aetnet.strategies.base.Strategy.after_optimizer_step`; AET: the EMA step).
        validator: the validation :class:`~aetnet.inference.evaluation.EvalSet` (needed when
            ``train.eval_strategy`` is not ``no``).
        metric: the task's headline metric, for best-checkpoint selection and early stopping.

    Applies the run's efficiency settings to ``model`` first (:func:`aetnet.train.efficiency.prepare_model`);
    the trainer's ``efficiency`` attribute records them. AdamW is the fused kernel (one launch per step,
    no host read of its step counters) on CUDA and CPU alike.
    """
    from transformers import EarlyStoppingCallback

    from aetnet.train.curves import CURVES_FILE, CurvesCallback
    from aetnet.train.tracking import TENSORBOARD_DIR, LogFileCallback, check_trackers, point_tensorboard

    check_trackers(cfg.train.report_to)
    if cfg.train.eval_strategy != "no" and validator is None:
        raise AetnetError(f"train.eval_strategy={cfg.train.eval_strategy} needs a validation split")
    efficiency = prepare_model(model, cfg)
    args = training_arguments(cfg, run_dir, metric)
    callbacks = [*callbacks, LogFileCallback(run_dir)]
    if cfg.train.eval_strategy != "no":
        callbacks.append(CurvesCallback(run_dir / CURVES_FILE, metric, f"{cfg.task} {cfg.strategy}"))
    if cfg.train.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(cfg.train.early_stopping_patience))
    optimizers = (None, None)
    groups = abilities(model).optimizer_param_groups(cfg.train.weight_decay)
    if groups is not None:  # the model's own parameter groups (AET: no decay on norms, biases, temperature)
        optimizers = (torch.optim.AdamW(groups, lr=cfg.train.learning_rate, fused=True), None)
    trainer = AetnetTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=validator.dataset if validator is not None else None,
        # AET's PITA maps each token's own word box: the batches carry word_bbox for it.
        data_collator=Collator(processor.tokenizer.pad_token_id,
                               word_boxes=abilities(model).uses_word_boxes),
        callbacks=callbacks,
        optimizers=optimizers,
        validator=validator,
        after_optimizer_step=after_optimizer_step,
    )
    point_tensorboard(trainer, run_dir / TENSORBOARD_DIR)
    trainer.efficiency = efficiency
    return trainer
