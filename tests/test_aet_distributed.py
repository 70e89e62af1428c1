"""Two CPU processes (gloo, DDP) train AETNet for two steps: queues gathered in rank order, identical on
both ranks, and equal to one process training on the concatenated batch.

The per-rank losses must average to the single-process loss for the two runs to follow the same
parameter trajectory, so the comparison run uses the decomposable losses only (task, and PITA with
an equal number of non-empty patches per half) while DITC/IMC/GLITC are still computed with weight 0
(and still enqueue). The momentum encoders do move (m = 0.5), so the step-2 queue columns check the
EMA after a synchronised step as well.
"""

from __future__ import annotations

import gc
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

WORLD, HALF, L, K, STEPS = 2, 2, 8, 16, 2
AET = dict(queue_size=K, embed_dim=16, momentum=0.5, ditc_weight=0.0, imc_weight=0.0, glitc_weight=0.0,
           pita_weight=1.0, pita_mask_empty=False)


def _build():
    # Imported lazily so spawned children build the model the same way as the parent.
    from transformers import LayoutLMv3Config, LayoutLMv3ForTokenClassification

    from aetnet.strategies.aet.aligners import (
        build_image_aligner,
        build_text_aligner,
        tiny_image_aligner_config,
        tiny_text_aligner_config,
    )
    from aetnet.strategies.aet.config import AETConfig
    from aetnet.strategies.aet.model import AETNetModel

    torch.manual_seed(0)
    config = LayoutLMv3Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, input_size=32,
        patch_size=8, vocab_size=100, max_position_embeddings=64, max_2d_position_embeddings=1001,
        coordinate_size=6, shape_size=4, num_labels=3, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    fusion = LayoutLMv3ForTokenClassification(config)
    image = build_image_aligner(config=tiny_image_aligner_config(32, 32, 8))
    text = build_text_aligner(config=tiny_text_aligner_config(100, 32, 64, pad_token_id=1))
    return AETNetModel(fusion, image, text, AETConfig(**AET))


def _batch(step: int) -> dict[str, torch.Tensor]:
    """WORLD * HALF documents, no padding and every token labelled (losses average exactly over halves)."""
    g = torch.Generator().manual_seed(100 + step)
    n = WORLD * HALF
    input_ids = torch.randint(3, 100, (n, L), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    xy = torch.randint(0, 900, (n, L, 2), generator=g)
    bbox = torch.cat([xy, xy + 10], dim=-1)
    return dict(input_ids=input_ids, bbox=bbox, attention_mask=torch.ones(n, L, dtype=torch.long),
                pixel_values=torch.rand(n, 3, 32, 32, generator=g) * 2 - 1,
                labels=torch.randint(0, 3, (n, L), generator=g),
                aug_pixel_values=torch.randn(n, 3, 32, 32, generator=g))


def _train(model, step_batches, forward) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for batch in step_batches:
        optimizer.zero_grad()
        forward(**batch)["loss"].backward()
        optimizer.step()
        model.momentum_update()


def _state(model) -> dict[str, torch.Tensor]:
    a = model.alignment
    return {"image_queue": a.image_queue.queue.clone(), "text_queue": a.text_queue.queue.clone(),
            "ptr": a.image_queue.ptr.clone(),
            "online": torch.cat([p.detach().flatten() for p in model.image_aligner.parameters()]),
            "momentum": torch.cat([p.flatten() for p in a.text_aligner_m.parameters()])}


#: The cases compared (id: rows_per_rank, activation checkpointing), all trained by one pair of processes.
CASES = {"sizes-gathered": (None, False), "padded-sync-free": (HALF, False), "activation-checkpointed": (HALF, True)}


def _worker(rank: int, port: int, out_dir: str) -> None:
    """Rank ``rank`` trains every case of CASES in turn (one process group) and saves each case's state."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for case, (rows_per_rank, checkpointed) in CASES.items():
            _train_case(rank, out_dir, case, rows_per_rank, checkpointed)
    finally:
        dist.destroy_process_group()
    # The results are on disk; leave without the interpreter's teardown (nothing under test happens there).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _train_case(rank: int, out_dir: str, case: str, rows_per_rank: int | None, checkpointed: bool) -> None:
    model = _build()
    if checkpointed:  # train.gradient_checkpointing: the ranks recompute, the reference does not
        from aetnet.models.checkpointing import set_activation_checkpointing

        set_activation_checkpointing(model)
    # Set by the trainer (the per-device batch size): the queues' gather then reads no sizes back.
    model.alignment.image_queue.rows_per_rank = model.alignment.text_queue.rows_per_rank = rows_per_rank
    # No buffer broadcast: each rank's queue must come from its own gathered enqueue.
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    halves = [{k: v[rank * HALF:(rank + 1) * HALF] for k, v in _batch(s).items()} for s in range(STEPS)]
    _train(model, halves, ddp)
    torch.save(_state(model), os.path.join(out_dir, f"{case}-rank{rank}.pt"))
    # DDP's reducer holds the gloo group, whose worker threads live as long as it does. Freed only by
    # the interpreter's final garbage collection, they aborted the child now and then on CI ("terminate
    # called without an active exception", SIGABRT, after the results were saved): free them here, and
    # let no rank tear the group down (or start the next case) while its peer still uses it.
    del ddp, model
    gc.collect()
    dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The folder of every case's per-rank states, trained by one spawned pair of processes."""
    out = tmp_path_factory.mktemp("aet-ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_two_process_queues_match_single_process_on_concatenated_batch(trained, case):
    ranks = [torch.load(trained / f"{case}-rank{r}.pt") for r in range(WORLD)]

    single = _build()
    initial_queue = single.alignment.image_queue.queue.clone()
    _train(single, [_batch(s) for s in range(STEPS)], single)
    reference = _state(single)

    filled = STEPS * WORLD * HALF
    assert int(reference["ptr"]) == filled
    assert not torch.allclose(reference["image_queue"][:, :filled], initial_queue[:, :filled])
    for state in ranks:
        assert int(state["ptr"]) == filled
        for key in ("image_queue", "text_queue", "online", "momentum"):
            assert torch.allclose(state[key], reference[key], atol=1e-5), key
    assert torch.equal(ranks[0]["image_queue"], ranks[1]["image_queue"])
    assert torch.equal(ranks[0]["text_queue"], ranks[1]["text_queue"])
