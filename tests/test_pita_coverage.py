"""PITA coverage (share of text tokens mapped to a patch) on the real FUNSD and CORD samples.

Before word boxes, PITA mapped the segment boxes LayoutLMv3 sees: 1.7 % of FUNSD text tokens and 0 %
of CORD's (group boxes). Each figure is checked against a plain-integer re-implementation of the rules
(released ``check_bbox``: ``x0 // cell == x1 // cell``; centre: the cell of the box centre).
The tokenizer is the tiny base's (the counts weigh words by their subwords, nothing else depends on it).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from aetnet.config.settings import resolve_config
from aetnet.data.encoding.processor import load_processor
from aetnet.strategies.aet.pita import pita_coverage
from aetnet.tasks.cord import CordTask
from aetnet.tasks.funsd import FunsdTask

#: (boxes, rule, cell) per setting: the default, the centre rule, the released-code preset.
SETTINGS = {"default": ("word", "inside", Fraction(1000, 14)), "center": ("word", "center", Fraction(1000, 14)),
            "preset": ("model", "inside", Fraction(72))}


def _cell(v: Fraction, cell: Fraction) -> int:
    return min(int(v // cell), 13)


def _uses(box: list[int], rule: str, cell: Fraction) -> bool:
    x0, y0, x1, y1 = (Fraction(c) for c in box)
    if rule == "center":
        return True
    return _cell(x0, cell) == _cell(x1, cell) and _cell(y0, cell) == _cell(y1, cell)


def coverage_figures(task, data: str, tokenizer) -> dict[str, tuple[float, float]]:
    """Per setting: (coverage by pita_coverage, coverage by the plain loop) over every window."""
    cfg = resolve_config({}, {"task": task.name, "data": {"path": data}})
    splits = task.load(cfg)
    label2id = {name: i for i, name in enumerate(task.label_list())}
    windows = [w for docs in splits.values() for w in task.encode(docs, tokenizer, label2id, cfg)]
    figures = {}
    for name, (which, rule, cell) in SETTINGS.items():
        used = text = 0
        mapped = 0.0
        for w in windows:
            boxes = w.word_bbox if which == "word" else w.bbox
            is_text = [b != [0, 0, 0, 0] for b in boxes]
            text += sum(is_text)
            used += sum(1 for b, t in zip(boxes, is_text) if t and _uses(b, rule, cell))
            box_t = torch.tensor([boxes])
            mapped += float(pita_coverage(box_t, torch.ones(1, len(boxes)), 14, float(cell), rule)) * sum(is_text)
        figures[name] = (mapped / text, used / text)
    return figures


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


@pytest.mark.parametrize("task,before", [(FunsdTask(), 0.017), (CordTask(), 0.0)], ids=["funsd", "cord"])
def test_word_boxes_give_pita_far_more_tokens_and_the_preset_keeps_its_boxes(shared_data, tokenizer, task, before):
    figures = coverage_figures(task, str(shared_data / task.name), tokenizer)
    for name, (got, loop) in figures.items():
        assert got == pytest.approx(loop, abs=1e-6), name
    assert figures["default"][0] > before + 0.05  # FUNSD 1.7 % -> 17 %; CORD 0 % -> 7 %
    assert figures["default"][0] > figures["preset"][0]
    assert figures["center"][0] == pytest.approx(1.0)
    assert figures["preset"][0] < 0.05  # the released computation maps the segment boxes, as before
