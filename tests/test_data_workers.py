"""DataLoader workers: AET views built in persistent worker processes follow the epoch set in the
training process, the training loader leaves the global RNG (dropout's) alone, and the default worker count."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from aetnet.data.encoding.windows import data_workers
from aetnet.errors import AetnetError
from aetnet.strategies.aet.strategy import AETViews
from aetnet.train.trainer import stop_loader_workers, training_arguments

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class Pages(torch.utils.data.Dataset):
    """Four small pages; each item is the AET view of its page (as WindowDataset calls extra_views)."""

    def __init__(self, views: AETViews):
        self.views = views
        self.images = []
        for i in range(4):
            img = Image.new("RGB", (64, 48), "white")
            ImageDraw.Draw(img).rectangle([4 * i, 4, 20 + 4 * i, 30], fill=(10 * i, 0, 0))
            self.images.append(img)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.views(self.images[i], i)["aug_pixel_values"]


def _expected(epoch: int, dataset: Pages) -> list[torch.Tensor]:
    """Views computed in this process by a fresh object set to ``epoch`` (no worker involved)."""
    fresh = AETViews(32, MEAN, STD, MEAN, STD, seed=7)
    fresh.epoch = epoch
    return [fresh(img, i)["aug_pixel_values"] for i, img in enumerate(dataset.images)]


def test_persistent_workers_see_the_epoch_set_by_the_callback():
    views = AETViews(32, MEAN, STD, MEAN, STD, seed=7)
    dataset = Pages(views)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, persistent_workers=True)
    epochs = []
    try:
        for epoch in range(3):
            views.epoch = epoch  # what EpochCallback.on_epoch_begin does, before the epoch's iterator starts
            epochs.append([batch[0] for batch in loader])
    finally:
        stop_loader_workers(loader)  # left to the garbage collector, a later test would wait 5 s per worker
    for epoch, got in enumerate(epochs):
        for a, b in zip(got, _expected(epoch, dataset)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(epochs[0][0], epochs[1][0])  # a new view every epoch


def test_default_worker_count(monkeypatch):
    import aetnet.data.ocr.pool as pool

    monkeypatch.setattr(pool, "available_cores", lambda: 32)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("AETNET_NUM_WORKERS", raising=False)  # the test session sets it (tests/conftest.py)
    assert data_workers(None) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert data_workers(None) == 4
    monkeypatch.setattr(pool, "available_cores", lambda: 2)
    assert data_workers(None) == 1
    assert data_workers(0) == 0 and data_workers(3) == 3
    with pytest.raises(AetnetError, match="num_workers"):
        data_workers(-1)
    # the environment variable gives the unset setting its value; a run's own setting wins over it
    monkeypatch.setenv("AETNET_NUM_WORKERS", "0")
    assert data_workers(None) == 0 and data_workers(3) == 3
    monkeypatch.setenv("AETNET_NUM_WORKERS", " 5 ")
    assert data_workers(None) == 5
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv("AETNET_NUM_WORKERS", bad)
        with pytest.raises(AetnetError, match="AETNET_NUM_WORKERS=.* is not a number of DataLoader workers"):
            data_workers(None)
    monkeypatch.setenv("AETNET_NUM_WORKERS", "")
    assert data_workers(None) == 1  # empty: unset


def test_training_arguments_use_workers_and_pin_only_on_gpu(tmp_path):
    from aetnet.config.settings import resolve_config

    cfg = resolve_config({}, {"task": "funsd"}, ["train.num_workers=2"])
    args = training_arguments(cfg, tmp_path)
    assert args.dataloader_num_workers == 2
    assert args.dataloader_persistent_workers  # workers live across epochs
    assert args.dataloader_pin_memory == torch.cuda.is_available()
    in_process = training_arguments(resolve_config({}, {"task": "funsd"}, ["train.num_workers=0"]), tmp_path)
    assert in_process.dataloader_num_workers == 0 and not in_process.dataloader_persistent_workers


class Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        return {"x": torch.tensor([float(i)])}


@pytest.mark.parametrize("workers", [0, 2])
def test_training_loader_never_draws_from_the_global_rng(tmp_path, workers):
    """Two epochs of the trainer's loader (persistent workers for 2), and the resumed epoch's
    ``skip_first_batches`` loader, leave the global RNG where it was: a resumed process, which builds
    new loaders, sees the same dropout stream as the uninterrupted one."""
    from accelerate import skip_first_batches

    from aetnet.config.settings import RunConfig
    from aetnet.train.trainer import AetnetTrainer

    cfg = RunConfig()
    cfg.train.batch_size, cfg.train.num_workers = 2, workers
    trainer = AetnetTrainer(model=torch.nn.Linear(1, 1), args=training_arguments(cfg, tmp_path),
                            train_dataset=Numbers())
    loader = trainer.get_train_dataloader()
    before = torch.random.get_rng_state()
    seen = []
    try:
        for epoch in range(2):
            loader.set_epoch(epoch)
            seen.append(sorted(int(x) for batch in loader for x in batch["x"].flatten()))
        skipped = skip_first_batches(loader, 1)
        skipped.set_epoch(1)
        seen.append(sorted(int(x) for batch in skipped for x in batch["x"].flatten()))
        stop_loader_workers(skipped)
    finally:
        trainer.release_data_workers()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert seen[0] == seen[1] == list(range(6)) and len(seen[2]) == 4  # every item once per epoch


def test_same_training_with_and_without_workers(tmp_path):
    """The weights after 3 steps (2 epochs of AET views, dropout on) and the evaluation's predictions do
    not depend on train.num_workers."""
    from safetensors.torch import load_file

    from aetnet.train.runner import finetune

    weights, predictions = [], []
    for workers in (0, 2):
        run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / f"w{workers}", overrides=[
            "train.max_steps=3", "train.batch_size=2", "data.max_train_documents=4", "data.max_eval_documents=1",
            "aet.queue_size=4", f"train.num_workers={workers}", "train.save_steps=3"])
        weights.append(load_file(run / "checkpoints" / "checkpoint-3" / "model.safetensors"))
        predictions.append((run / "predictions.jsonl").read_text())  # evaluation reads pages in workers too
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0, msg=key)
    assert predictions[0] == predictions[1] and predictions[0]


def test_a_finished_run_leaves_no_loader_workers(tmp_path):
    """``finetune`` stops its persistent loader workers when training ends. Left to the garbage collector,
    they stayed alive after the run, and the next ``gc.collect()`` (the next run's Trainer makes one) lost
    their stop signal and waited 5 s per worker (pytorch/pytorch#81794)."""
    import multiprocessing

    from aetnet.train.runner import finetune

    def loader_workers() -> list:
        return [p for p in multiprocessing.active_children() if p.name.startswith(("Process", "ForkProcess"))
                and p.is_alive()]

    before = set(loader_workers())
    for run in ("a", "b"):
        finetune("funsd", base="tiny", demo=True, output=tmp_path / run, overrides=[
            "train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
            "data.max_eval_documents=1", "train.num_workers=2"])
        assert set(loader_workers()) - before == set(), f"run {run} left DataLoader workers running"
