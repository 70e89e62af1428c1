"""A training step never waits for the device outside logging steps.

Real tiny AET and full fine-tuning runs (CPU) go through the Trainer while ``Tensor.item``, ``Tensor.__bool__``,
``.cpu()``, ``.tolist()``, ``.numpy()``, ``float(tensor)`` and ``int(tensor)`` (device-to-host reads) and
``torch.tensor``/``as_tensor``/``from_numpy`` (host data entering the step, a blocking host-to-device copy
from pageable memory) are wrapped with counters that call through. On a GPU each of these would be a
host-device synchronisation. Between the start and the end of every non-logging, non-saving step
(forward, backward, gradient clipping, fused AdamW, EMA update, enqueue) none may happen; at logging
steps the trainer reads its loss terms back.
"""

from __future__ import annotations

import traceback

import pytest
import torch
from transformers import TrainerCallback

SYNC_METHODS = ("item", "__bool__", "cpu", "tolist", "numpy", "__float__", "__int__", "__index__")
HOST_DATA_FACTORIES = ("tensor", "as_tensor", "from_numpy")


class SyncCounter(TrainerCallback):
    """Counts wrapped tensor-method calls between on_step_begin and on_step_end of chosen steps."""

    def __init__(self, logging_steps: int):
        self.logging_steps = logging_steps
        self.active = False
        self.calls: list[str] = []
        self.counted_steps: list[int] = []
        self.logging_calls = 0

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        self.active = step % self.logging_steps != 0
        if self.active:
            self.counted_steps.append(step)

    def on_step_end(self, args, state, control, **kwargs):
        self.active = False

    def record(self, name: str) -> None:
        if self.active:
            frame = traceback.extract_stack(limit=3)[0]  # the caller of the wrapper
            self.calls.append(f"{name} at {frame.filename}:{frame.lineno}")
        else:
            self.logging_calls += 1


@pytest.fixture
def counting(monkeypatch):
    def install(counter: SyncCounter) -> None:
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)

            def wrapper(self, *args, __name=name, __original=original, **kwargs):
                counter.record(__name)
                return __original(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapper)
        # Tensors made from Python data inside a step are host-to-device copies on a GPU (blocking
        # ones from pageable memory, e.g. torch.tensor(list, device="cuda")).
        for name in HOST_DATA_FACTORIES:
            original = getattr(torch, name)

            def factory(*args, __name=name, __original=original, **kwargs):
                counter.record(f"torch.{__name}")
                return __original(*args, **kwargs)

            monkeypatch.setattr(torch, name, factory)

    return install


def _run_trainer(tmp_path, strategy, overrides, callbacks):
    from aetnet.config.settings import resolve_config
    from aetnet.train import runner
    from aetnet.train.trainer import build_trainer

    cfg = resolve_config({}, {"task": "funsd", "strategy": strategy, "model": {"base": "tiny"},
                              "output": str(tmp_path / "run")}, overrides)
    parts = runner.resolve_components(cfg)
    data = runner.load_data(cfg, parts.task, demo=True)
    training = runner.encode_training(cfg, parts, data)
    run_dir = runner.prepare_run_dir(cfg)
    model = runner.build_model(cfg, parts, data.labels)
    return build_trainer(model, cfg, training.dataset, parts.processor,
                         parts.strategy.callbacks(model, cfg) + callbacks, run_dir,
                         after_optimizer_step=parts.strategy.after_optimizer_step)


@pytest.mark.parametrize("strategy,extra", [
    ("aet", []),
    ("aet", ["aet.mask_same_document=true", "aet.text_view=mask", "train.gradient_accumulation_steps=2"]),
    ("full", []),
], ids=["aet", "aet-same-document-masking+text-mask+accumulation", "full"])
def test_no_host_sync_outside_logging_steps(tmp_path, counting, strategy, extra):
    counter = SyncCounter(logging_steps=3)
    overrides = ["train.max_steps=6", "train.batch_size=2", "train.logging_steps=3", "train.save_steps=100",
                 "data.max_train_documents=6", "data.max_eval_documents=1", "aet.queue_size=8", *extra]
    trainer = _run_trainer(tmp_path, strategy, overrides, [counter])
    counting(counter)
    trainer.train()
    assert counter.counted_steps == [1, 2, 4, 5]
    assert not counter.calls, sorted(set(counter.calls))
    # The wrappers do see calls: the logging steps read the loss terms back.
    assert counter.logging_calls > 0
    logged = [e for e in trainer.state.log_history if "task_loss" in e]
    assert len(logged) == 2
    if strategy == "aet":
        assert all("ditc_loss" in e and "pita_loss" in e for e in logged)


def test_non_finite_term_names_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    """A NaN at step 3 (no logging there) is found at the next save/log, named with its step; the
    checkpoint of step 2 stays and none is written after the NaN."""
    from aetnet.config.settings import RunConfig
    from aetnet.train.trainer import AetnetTrainer, NonFiniteLossError, training_arguments

    class NanAtStep3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            task = (self.w * x).mean()
            ditc = task * (float("nan") if self.calls == 3 else 1.0)
            return {"loss": task, "task_loss": task, "ditc_loss": ditc}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"x": torch.tensor([float(i)])}

    cfg = RunConfig()
    cfg.train.max_steps, cfg.train.batch_size, cfg.train.save_steps, cfg.train.logging_steps = 8, 2, 2, 5
    trainer = AetnetTrainer(model=NanAtStep3(), args=training_arguments(cfg, tmp_path), train_dataset=Data())
    with pytest.raises(NonFiniteLossError, match=r"the ditc loss became nan at step 3 \(found at step 4\)"):
        trainer.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]


# ---- the feature queue under torch.distributed (two gloo processes) ------------------------------

# The two processes run tests/queue_ranks.py (spawned children import it, a module lighter than this one).


def test_distributed_enqueue_is_sync_free_and_equals_one_process(tmp_path):
    """Padded to rows_per_rank, two ranks with unequal batches fill the ring exactly like one process
    enqueueing the concatenated rows (wrap-around and more rows than K included), with no host read."""
    import socket

    import torch.multiprocessing as mp

    from aetnet.strategies.aet.queue import FeatureQueue
    from tests.queue_ranks import DIM as _DIM
    from tests.queue_ranks import SIZES as _SIZES
    from tests.queue_ranks import queue_rows as _queue_rows
    from tests.queue_ranks import queue_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(queue_worker, args=(port, str(tmp_path), SYNC_METHODS), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    single = {k: FeatureQueue(_DIM, k) for k in (7, 4)}
    for step, sizes in enumerate(_SIZES):
        feats, ids = _queue_rows(step, sizes)
        for q in single.values():
            q.enqueue(feats, ids)
    for state in ranks:
        assert state["calls"] == []
        for k, q in single.items():
            assert torch.equal(state[k]["queue"], q.queue), k
            assert torch.equal(state[k]["ids"], q.ids), k
            assert int(state[k]["ptr"]) == int(q.ptr) == sum(map(sum, _SIZES)) % k
