"""The GPU path, on a CUDA device: bf16 autocast against fp32, compiled (inductor) against eager, activation
checkpointing, pinned-memory persistent DataLoader workers, a one-GPU DDP step over NCCL, and predict and
serve on CUDA against the CPU.

Every test here is marked ``cuda`` and skips on a machine without a CUDA GPU, with a reason that says
so; pytest reports such tests as skipped, never as passed, and ``python -m benchmarks.gpu_check`` (which
runs ``pytest -m cuda``) counts a skip as a failure on a GPU machine. Run them with
``pytest -m cuda tests/test_cuda.py`` on a GPU machine.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
import time
import urllib.request

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: torch.cuda.is_available() is False (no GPU on this machine)"),
]

LENGTHS, WIDTH, LABELS = (12, 7), 12, 4


def _batch(padded_windows, image: int = 32) -> dict[str, torch.Tensor]:
    batch = padded_windows(0, LENGTHS, WIDTH, LABELS, augmented=True)
    # The tiny in-memory AET model reads 32x32 pages; the fixture draws 64x64 ones.
    for key in ("pixel_values", "aug_pixel_values"):
        batch[key] = torch.nn.functional.interpolate(batch[key], size=(image, image), mode="bilinear")
    batch["input_ids"] = batch["input_ids"].clamp(max=99)
    return {k: v.cuda() for k, v in batch.items()}


def _step(model, batch, bf16: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = model(**batch)
    out["loss"].backward()
    terms = {k: out[k].detach().float() for k in ("loss", "task_loss", "ditc_loss", "imc_loss", "glitc_loss",
                                                   "pita_loss")}
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return terms, grads


def _close_grads(got: dict, want: dict, min_cosine: float) -> None:
    assert got.keys() == want.keys() and want
    flat_got = torch.cat([got[k].flatten() for k in want])
    flat_want = torch.cat([want[k].flatten() for k in want])
    cosine = torch.nn.functional.cosine_similarity(flat_got, flat_want, dim=0).item()
    assert cosine >= min_cosine, cosine


@pytest.fixture()
def aet_model(tiny_aet_model):
    return tiny_aet_model(32, 8, queue_size=16).cuda()


def test_bf16_aet_step_matches_fp32(aet_model, padded_windows):
    batch = _batch(padded_windows)
    fp32_terms, fp32_grads = _step(copy.deepcopy(aet_model), batch)
    bf16_terms, bf16_grads = _step(copy.deepcopy(aet_model), batch, bf16=True)
    for name, value in fp32_terms.items():  # bf16 keeps 8 mantissa bits: about 0.4 % per rounding
        torch.testing.assert_close(bf16_terms[name], value, rtol=3e-2, atol=3e-2, msg=name)
    _close_grads(bf16_grads, fp32_grads, 0.99)


def test_compiled_inductor_step_matches_eager(aet_model, padded_windows):
    from aetnet.train.efficiency import compile_encoders

    batch = _batch(padded_windows)
    eager_terms, eager_grads = _step(copy.deepcopy(aet_model), batch)
    compiled = copy.deepcopy(aet_model)
    assert compile_encoders(compiled, "inductor") >= 3  # LayoutLMv3 and the aligners (momentum ones too)
    _step(compiled, batch)  # compiles; it also fills the queues, so the starting state is loaded again
    compiled.load_state_dict(aet_model.state_dict())
    terms, grads = _step(compiled, batch)
    for name, value in eager_terms.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-4, atol=1e-5, msg=name)
    _close_grads(grads, eager_grads, 0.9999)


def test_checkpointed_bf16_step_matches_plain(aet_model, padded_windows):
    from aetnet.models.checkpointing import set_activation_checkpointing

    batch = _batch(padded_windows)
    plain_terms, plain_grads = _step(copy.deepcopy(aet_model), batch, bf16=True)
    checkpointed = copy.deepcopy(aet_model)
    set_activation_checkpointing(checkpointed)
    terms, grads = _step(checkpointed, batch, bf16=True)
    for name, value in plain_terms.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6, msg=name)
    _close_grads(grads, plain_grads, 0.99999)


def test_pinned_persistent_workers_feed_a_cuda_run(tmp_path):
    from aetnet.config.settings import resolve_config
    from aetnet.train.runner import finetune
    from aetnet.train.trainer import training_arguments

    args = training_arguments(resolve_config({}, {"strategy": "aet"}, ["train.num_workers=2"]), tmp_path / "args")
    assert args.dataloader_pin_memory is True and args.dataloader_persistent_workers is True
    run = finetune("funsd", strategy="aet", base="tiny", demo=True, output=tmp_path / "run", overrides=[
        "train.max_steps=3", "train.batch_size=2", "train.num_workers=2", "data.max_train_documents=4",
        "data.max_eval_documents=1", "train.logging_steps=1"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert metrics["trained_steps"] == 3 and metrics["train_loss"] == metrics["train_loss"]  # not NaN


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=1)
    try:
        torch.cuda.set_device(0)
        model, batch = torch.load(out + ".in", weights_only=False)
        ddp = DistributedDataParallel(model.cuda(), device_ids=[0], broadcast_buffers=False,
                                      find_unused_parameters=False)
        ddp.train()
        ddp(**{k: v.cuda() for k, v in batch.items()})["loss"].backward()
        torch.save({n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}, out)
    finally:
        dist.destroy_process_group()


def test_one_gpu_ddp_step_over_nccl_matches_plain_step(aet_model, padded_windows, tmp_path):
    import torch.multiprocessing as mp

    assert torch.distributed.is_nccl_available()
    batch = _batch(padded_windows)
    _, plain = _step(copy.deepcopy(aet_model), batch)
    out = str(tmp_path / "grads.pt")
    torch.save((copy.deepcopy(aet_model).cpu(), {k: v.cpu() for k, v in batch.items()}), out + ".in")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, out), nprocs=1, join=True)
    grads = {k: v.cuda() for k, v in torch.load(out).items()}
    assert grads.keys() == plain.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _funsd_page(shared_data):
    from PIL import Image

    ann = json.loads((shared_data / "funsd/dataset/testing_data/annotations/82092117.json").read_text())
    words = [w for entity in ann["form"] for w in entity["words"] if w["text"].strip()]
    image = Image.open(shared_data / "funsd/dataset/testing_data/images/82092117.png").convert("RGB")
    return image, [w["text"] for w in words], [w["box"] for w in words]


def test_predict_on_cuda_matches_cpu(funsd_run, shared_data):
    from aetnet.predict.predictor import Predictor

    image, words, boxes = _funsd_page(shared_data)
    on_cpu = Predictor(funsd_run, device="cpu").predict_words(image, words, boxes)
    predictor = Predictor(funsd_run, device="cuda")
    assert next(predictor.model.parameters()).is_cuda
    on_gpu = predictor.predict_words(image, words, boxes)
    assert [w["label"] for w in on_gpu["words"]] == [w["label"] for w in on_cpu["words"]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(on_gpu["words"], on_cpu["words"])) <= 1e-3


def test_serve_on_cuda_answers_like_the_cpu_predictor(funsd_run, shared_data):
    import uvicorn

    from aetnet.predict.predictor import Predictor
    from aetnet.serve.app import create_app

    page = shared_data / "funsd/dataset/testing_data/images/82092117.png"
    want = Predictor(funsd_run, device="cpu").predict_file(page)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor(funsd_run, device="cuda")), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        boundary = "aetnet-cuda-check"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{page.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + page.read_bytes() + \
            f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST")
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert resp.status == 200
            got = json.loads(resp.read())
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert [w["label"] for w in got[0]["words"]] == [w["label"] for w in want[0]["words"]]
    assert [w["text"] for w in got[0]["words"]] == [w["text"] for w in want[0]["words"]]
