"""Every setting is documented: ``aetnet recipes keys`` lists each one (dotted key, type, default, description),
read from the dataclasses, and a setting without a one-line description fails here."""

from __future__ import annotations

import dataclasses
import json

import pytest

from aetnet.config.reference import settings_entries
from aetnet.config.settings import RunConfig
from aetnet.registry import STRATEGIES


def undocumented() -> list[str]:
    """The settings whose field has no docstring."""
    return [e["key"] for e in settings_entries() if not e["description"].strip()]


def flat(tree: dict, prefix: str = "") -> dict:
    """``{"aet": {"alpha": 0.4}}`` -> ``{"aet.alpha": 0.4}`` (one level of sections)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{prefix}{key}.{k}": v for k, v in value.items()})
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_setting_has_a_description():
    assert undocumented() == []


def test_every_strategy_section_is_listed():
    keys = {e["key"] for e in settings_entries()}
    for section, settings in STRATEGIES.sections().items():
        assert {f"{section}.{f.name}" for f in dataclasses.fields(settings)} <= keys
    assert {"aet.alpha", "aet.pita_rule", "lora.r", "lora.target_modules", "prompt.num_prompts"} <= keys


def test_a_setting_without_a_description_is_caught(monkeypatch):
    """A registered section with an undocumented field is reported by name (the check can fail)."""
    @dataclasses.dataclass
    class Bare:
        """A section whose field has no docstring."""

        knob: int = 3

    STRATEGIES.names()
    monkeypatch.setattr(STRATEGIES, "_sections", {**STRATEGIES._sections, "bare": Bare})
    assert undocumented() == ["bare.knob"]


def test_recipes_keys_json_lists_every_setting_with_its_default(capsys):
    """The keys and defaults printed equal those of a default run's config.yaml (``RunConfig().to_dict()``)."""
    from aetnet.cli.main import main

    assert main(["recipes", "keys", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    expected = flat(RunConfig().to_dict())
    assert expected["train.eval_strategy"] == "no"
    expected["train.eval_strategy"] = None  # the field's default is "unset", which a run resolves from eval_steps
    assert [e["key"] for e in entries] == list(expected)
    assert {e["key"]: e["default"] for e in entries} == expected
    by_key = {e["key"]: e for e in entries}
    assert by_key["aet.queue_size"]["type"] == "int" and by_key["aet.queue_size"]["default"] == 4096
    assert by_key["train.bf16"]["type"] == "bool | None"
    assert "Rank" in by_key["lora.r"]["description"] and "``" not in by_key["aet.pita_rule"]["description"]


def test_recipes_keys_text_and_one_section(capsys):
    from aetnet.cli.main import main

    assert main(["recipes", "keys", "lora"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    assert heads == ["lora.r  (int, default 8)", "lora.alpha  (int, default 16)", "lora.dropout  (float, default 0.1)",
                     "lora.target_modules  (list[str], default ['query', 'value'])"]
    assert main(["recipes", "keys", "lorra"]) == 2
    assert "no such settings section; choose one of: aet, data, lora" in capsys.readouterr().err


@pytest.mark.parametrize("section", ["train", "aet", "lora"])
def test_the_sections_the_issue_named_are_documented(section):
    """TrainConfig, AETConfig and LoraSettings had 11, 17 and 4 fields without a description."""
    entries = [e for e in settings_entries() if e["key"].startswith(f"{section}.")]
    assert entries and all(len(e["description"]) > 15 for e in entries)
