"""A strategy added in one file with one registration line (tests/toy_strategy.py) trains end to end: its settings
section comes from a recipe and a ``key=value`` override, lands in ``config.yaml`` and decides what trains."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from aetnet.errors import AetnetError
from aetnet.registry import STRATEGIES

TOY = Path(__file__).with_name("toy_strategy.py")


@pytest.fixture()
def toy(monkeypatch):
    """tests/toy_strategy.py imported, its registration undone after the test (the registry is per process)."""
    STRATEGIES.names()  # the built-in strategies are registered before the snapshot
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))
    monkeypatch.setattr(STRATEGIES, "_sections", dict(STRATEGIES._sections))
    spec = importlib.util.spec_from_file_location("toy_strategy", TOY)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_strategy", module)  # inspect reads the settings' docstrings from it
    spec.loader.exec_module(module)
    return module


def test_the_toy_section_is_a_setting(toy):
    from aetnet.config.settings import resolve_config

    cfg = resolve_config({"strategy": "toy", "toy": {"suffixes": ["bias"]}}, {}, ["toy.suffixes=bias,dense.weight"])
    assert cfg.toy.suffixes == ["bias", "dense.weight"]
    assert cfg.to_dict()["toy"] == {"suffixes": ["bias", "dense.weight"]}
    assert list(cfg.to_dict())[-2:] == ["toy", "relations"]  # strategy sections stand before relations
    with pytest.raises(AetnetError, match="unknown config key 'toy.suffix'; valid keys here: suffixes"):
        resolve_config({}, {}, ["toy.suffix=bias"])


def test_the_toy_is_gone_after_the_fixture():
    """Without the fixture the toy is not registered (no other test sees it)."""
    from aetnet.config.settings import resolve_config

    assert "toy" not in STRATEGIES
    with pytest.raises(AetnetError, match="unknown config key 'toy'; valid keys here: aet, data, lora"):
        resolve_config({}, {}, ["toy.suffixes=bias"])


def test_the_toy_strategy_trains_end_to_end(toy, tmp_path, tiny_base):
    from transformers import LayoutLMv3ForTokenClassification

    from aetnet.cli.main import main

    recipe = tmp_path / "toy.yaml"
    recipe.write_text("task: funsd\nstrategy: toy\ntoy:\n  suffixes: [bias]\n")
    run = tmp_path / "run"
    assert main(["finetune", "funsd", "--demo", "--recipe", str(recipe), "--output", str(run),
                 "toy.suffixes=bias,LayerNorm.weight", "train.max_steps=2", "train.batch_size=2",
                 "train.num_workers=0", "data.max_train_documents=2", "data.max_eval_documents=1"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["strategy"] == "toy" and saved["toy"] == {"suffixes": ["bias", "LayerNorm.weight"]}
    metrics = json.loads((run / "metrics.json").read_text())
    assert "f1" in json.dumps(metrics)

    # What trained, counted on a plain copy of the tiny base with the demo's 7 FUNSD labels.
    plain = LayoutLMv3ForTokenClassification.from_pretrained(str(tiny_base / "layoutlmv3"), num_labels=7)
    params = dict(plain.named_parameters())
    head = sum(p.numel() for n, p in params.items() if not n.startswith("layoutlmv3."))
    biases = sum(p.numel() for n, p in params.items() if n.startswith("layoutlmv3.") and n.endswith(".bias"))
    norms = sum(p.numel() for n, p in params.items()
                if n.startswith("layoutlmv3.") and n.endswith("LayerNorm.weight"))
    assert norms > 0 and head > 0
    assert metrics["trainable_parameters"] == head + biases + norms  # the override, not the recipe's [bias]
    assert metrics["total_parameters"] == sum(p.numel() for p in params.values())


def test_the_toy_settings_are_documented_and_listed(toy, capsys):
    """A registered strategy's section is part of the reference: described, and printed by ``recipes keys``."""
    from aetnet.cli.main import main
    from aetnet.config.reference import settings_entries

    assert [e["key"] for e in settings_entries() if not e["description"].strip()] == []
    assert main(["recipes", "keys", "toy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{
        "key": "toy.suffixes", "type": "list[str]", "default": ["bias"],
        "description": "Endings of the backbone parameter names that train (the task head always trains)."}]
