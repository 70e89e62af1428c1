"""Seqeval entity scores on a hand-checked case; configuration resolution and errors."""

from __future__ import annotations

import pytest

from aetnet.config.settings import RunConfig, resolve_config
from aetnet.errors import AetnetError
from aetnet.metrics import entity_scores


def test_entity_scores_hand_checked():
    gold = [["B-QUESTION", "I-QUESTION", "O", "B-ANSWER"], ["B-HEADER", "O"]]
    pred = [["B-QUESTION", "I-QUESTION", "O", "B-QUESTION"], ["B-HEADER", "B-ANSWER"]]
    # Gold entities: Q(0-1), A(3), H(0) = 3. Predicted: Q(0-1), Q(3), H(0), A(1) = 4. Correct: Q(0-1), H(0) = 2.
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (0.5 * 2 / 3) / (0.5 + 2 / 3))
    assert scores["per_label"]["ANSWER"]["recall"] == 0.0
    assert scores["per_label"]["QUESTION"]["precision"] == pytest.approx(0.5)
    assert scores["per_label"]["HEADER"]["f1"] == pytest.approx(1.0)


def test_config_layers_and_types():
    cfg = resolve_config(
        {"task": "funsd", "train": {"learning_rate": 1e-5, "max_steps": 1000}},
        {"model": {"base": "tiny"}},
        ["train.max_steps=7", "aet.alpha=0", "lora.target_modules=query,key", "train.bf16=true"],
    )
    assert isinstance(cfg, RunConfig)
    assert cfg.train.max_steps == 7 and cfg.train.learning_rate == 1e-5 and cfg.train.bf16 is True
    assert cfg.aet.alpha == 0.0 and cfg.lora.target_modules == ["query", "key"]
    assert cfg.model.base == "tiny"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.learnin_rate=1"], "unknown config key 'train.learnin_rate'.*learning_rate"),
        (["train.max_steps=abc"], "must be an integer"),
        (["data.box_level=line"], "choose one of: segment, word"),
        (["aet.pita_form=dot"], "cosine, ce"),
        (["nonsense"], "not key=value"),
        (["data.stride=600"], "smaller than data.max_length"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(AetnetError, match=message):
        resolve_config({}, {}, overrides)


def test_every_shipped_recipe_loads():
    from aetnet.config.recipes import list_recipes, recipes_dir
    from aetnet.config.settings import load_recipe_dict

    names = list_recipes()
    assert "funsd/full" in names
    assert {"funsd_re/full", "funsd_re/aet", "funsd_re/lora"} <= set(names)
    for name in names:
        cfg = resolve_config(load_recipe_dict(recipes_dir() / f"{name}.yaml"))
        assert cfg.task.replace("-", "_") == name.split("/")[0]


def test_default_recipe_for_every_strategy_with_a_dash():
    from aetnet.config.recipes import find_recipe

    path = find_recipe(None, "funsd", "aet-lora")
    assert path is not None and path.name == "aet_lora.yaml"
    assert find_recipe(None, "rvl-cdip", "full").parent.name == "rvl_cdip"


def test_strategy_sections_round_trip(tmp_path):
    """The strategies' sections (registered beside their code) survive config.yaml, pickling and copies."""
    import copy
    import pickle

    from aetnet.config.settings import load_recipe_dict

    cfg = resolve_config({"strategy": "aet-lora", "aet": {"alpha": 0.0}}, {},
                         ["lora.r=4", "lora.target_modules=query,key", "prompt.num_prompts=3", "aet.pita_rule=center"])
    assert (cfg.aet.alpha, cfg.aet.pita_rule, cfg.lora.r, cfg.prompt.num_prompts) == (0.0, "center", 4, 3)
    cfg.save(tmp_path / "config.yaml")
    saved = load_recipe_dict(tmp_path / "config.yaml")
    assert list(saved) == ["task", "strategy", "output", "data", "model", "train", "aet", "lora", "prompt", "relations"]
    assert saved["lora"] == {"r": 4, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "key"]}
    assert resolve_config(saved) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    assert resolve_config(saved) != resolve_config(saved, {}, ["lora.r=5"])
    with pytest.raises(AttributeError, match="no attribute or settings section 'lorra'"):
        cfg.lorra  # noqa: B018


def test_a_config_yaml_saved_before_the_sections_moved_loads_the_same(tmp_path):
    """tests/fixtures/config_before_strategy_sections.yaml was written by aetnet before the strategies' settings moved
    beside their code (commit 9a0d1cf: aet, lora, prompt fixed fields of RunConfig); it loads to the same values
    and is written back byte for byte, plus the one setting added since (``data.lang``, issue 23)."""
    from pathlib import Path

    from aetnet.config.settings import load_recipe_dict

    old = Path(__file__).parent / "fixtures" / "config_before_strategy_sections.yaml"
    cfg = resolve_config(load_recipe_dict(old))
    assert (cfg.strategy, cfg.aet.alpha, cfg.aet.pita_rule, cfg.aet.queue_size) == ("aet-lora", 0.0, "center", 16)
    assert (cfg.lora.r, cfg.lora.target_modules, cfg.prompt.num_prompts) == (4, ["query", "key"], 3)
    cfg.save(tmp_path / "config.yaml")
    expected = old.read_bytes().replace(b"  ocr_lang: eng\n", b"  lang: null\n  ocr_lang: eng\n", 1)
    assert expected != old.read_bytes()
    assert (tmp_path / "config.yaml").read_bytes() == expected
