"""The trainer runs AET's EMA step exactly once per optimizer step, right after it, with the new weights.

A real run (tiny base, FUNSD demo, the runner's stages and trainer) with gradient accumulation 2 and 2
optimizer steps. A callback records the online and momentum weights at the start and at the end of each
optimizer step; the momentum weights must equal an EMA computed here, in float64, from the recorded
online weights: mu_k = m mu_(k-1) + (1 - m) theta_k. An EMA per micro-batch, before the optimizer step
(theta_(k-1)), or none at all gives other values: m = 0.5 and a large learning rate keep them far apart.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

M = 0.5


def _pairs(model):
    """(name, online, momentum) for every parameter of both aligners and both projection heads, by name."""
    a = model.alignment
    for prefix, online, momentum in (("image_aligner", model.image_aligner, a.image_aligner_m),
                                     ("text_aligner", model.text_aligner, a.text_aligner_m),
                                     ("vision_proj", a.vision_proj, a.vision_proj_m),
                                     ("text_proj", a.text_proj, a.text_proj_m)):
        twins = dict(momentum.named_parameters())
        for name, param in online.named_parameters():
            yield f"{prefix}.{name}", param, twins[name]


class Recorder(TrainerCallback):
    """Copies (float64) of the online and momentum weights at the start and after every optimizer step."""

    def __init__(self, model):
        self.model = model
        self.online, self.momentum = [], []
        self.micro_steps = 0

    def _record(self):
        self.online.append({n: p.detach().double().clone() for n, p, _ in _pairs(self.model)})
        self.momentum.append({n: t.detach().double().clone() for n, _, t in _pairs(self.model)})

    def on_train_begin(self, args, state, control, **kwargs):
        self._record()

    def on_substep_end(self, args, state, control, **kwargs):  # a micro-batch without an optimizer step
        self.micro_steps += 1

    def on_step_end(self, args, state, control, **kwargs):  # after optimizer, EMA and scheduler steps
        self.micro_steps += 1
        self._record()


def test_ema_runs_once_per_optimizer_step_with_the_new_weights(tmp_path):
    from aetnet.config.settings import resolve_config
    from aetnet.train import runner
    from aetnet.train.trainer import build_trainer

    cfg = resolve_config({}, {"task": "funsd", "strategy": "aet", "model": {"base": "tiny"},
                              "output": str(tmp_path / "run")},
                         ["train.max_steps=2", "train.batch_size=1", "train.gradient_accumulation_steps=2",
                          "train.learning_rate=0.01", "train.warmup_ratio=0", "train.save_steps=100",
                          "train.logging_steps=100", f"aet.momentum={M}", "aet.queue_size=8",
                          "data.max_length=64", "data.stride=16", "data.max_train_documents=2",
                          "data.max_eval_documents=1"])
    parts = runner.resolve_components(cfg)
    data = runner.load_data(cfg, parts.task, demo=True)
    training = runner.encode_training(cfg, parts, data)
    run_dir = runner.prepare_run_dir(cfg)
    model = runner.build_model(cfg, parts, data.labels)
    recorder = Recorder(model)
    trainer = build_trainer(model, cfg, training.dataset, parts.processor,
                            parts.strategy.callbacks(model, cfg) + [recorder], run_dir,
                            after_optimizer_step=parts.strategy.after_optimizer_step)
    trainer.train()

    assert recorder.micro_steps == 4  # 2 optimizer steps of 2 micro-batches each
    assert len(recorder.online) == 3  # the start, then after each optimizer step
    expected = recorder.momentum[0]
    assert all(torch.equal(expected[n], recorder.online[0][n]) for n in expected)  # copies to start with
    for step in (1, 2):
        online, momentum = recorder.online[step], recorder.momentum[step]
        moved = sum(float((online[n] - recorder.online[step - 1][n]).abs().max()) > 1e-3 for n in online)
        assert moved > len(online) // 2  # the optimizer step changed most tensors: the variants differ
        expected = {n: M * expected[n] + (1 - M) * online[n] for n in expected}
        worst = max(float((momentum[n] - expected[n]).abs().max()) for n in expected)
        assert worst < 1e-6, f"step {step}: momentum weights differ from the EMA by {worst}"
