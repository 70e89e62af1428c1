"""The shared field checks (aetnet.data.documents.validate), the run accounting and one-sentence YAML errors."""

from __future__ import annotations

import math

import pytest

from aetnet.data.documents.screen import BadDocuments
from aetnet.data.documents.validate import (
    at,
    describe,
    expect_box,
    expect_integer,
    expect_number,
    expect_object,
    expect_text,
    read_json,
    require,
)
from aetnet.errors import AetnetError, DataError


def test_paths_and_descriptions():
    assert at("", "form") == "form" and at("form", 3) == "form[3]" and at("form[3]", "id") == "form[3].id"
    assert describe(None) == "null" and describe(True) == "the boolean true"
    assert describe("12a") == "the string '12a'" and describe(7) == "the number 7"
    assert describe([1]) == "a list of 1 item" and describe([]) == "a list of 0 items"
    assert describe({"a": 1}) == "an object"


@pytest.mark.parametrize(("value", "expected"), [(3, 3.0), (2.5, 2.5), ("12", 12.0), ("-1e2", -100.0)])
def test_numbers_accepted(value, expected):
    assert expect_number(value, "f", "a.json") == expected


@pytest.mark.parametrize("value", ["12a", "", True, None, [], {}, float("nan"), "inf"])
def test_numbers_refused_with_file_field_and_value(value):
    with pytest.raises(DataError) as err:
        expect_number(value, "form[3].box[1]", "a.json")
    message = str(err.value)
    assert message.startswith("a.json, field 'form[3].box[1]': expected a")
    assert "--on-bad-document skip" in message and "\n" not in message


def test_integers():
    assert [expect_integer(v, "f", "s") for v in (4, 4.0, "7")] == [4, 4, 7]
    for bad in (1.5, "x", False, [3], "1e400"):
        with pytest.raises(DataError, match="expected an integer"):
            expect_integer(bad, "f", "s")


def test_text_objects_and_boxes():
    assert expect_text(12, "t", "s") == "12" and expect_text("a", "t", "s") == "a"
    with pytest.raises(DataError, match="expected a text string, got a list"):
        expect_text(["a"], "t", "s")
    with pytest.raises(DataError, match="field 'valid_line\\[2\\]': expected an object, got the string 'menu'"):
        expect_object("menu", "valid_line[2]", "r.json")
    assert expect_box([1, 2, 3, 4], "b", "s") == [1.0, 2.0, 3.0, 4.0]
    assert expect_box([1, "2", 3, 4], "b", "s") == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(DataError, match=r"field 'b\[2\]': expected a number, got null"):
        expect_box([1, 2, None, 4], "b", "s")
    with pytest.raises(DataError, match=r"expected a list of 4 numbers \[x0, y0, x1, y1\], got a list of 3 items"):
        expect_box([1, 2, 3], "b", "s")
    assert expect_box([0, 1] * 4, "poly", "s", size=8) == [0.0, 1.0] * 4
    assert math.isfinite(expect_box([1e300, 0, 0, 0], "b", "s")[0])


def test_require_presence_null_and_optional():
    obj = {"id": 3, "gone": None}
    assert require(obj, "id", "integer", "form[0]", "a.json") == 3
    with pytest.raises(DataError, match=r"a.json, field 'form\[0\].label': is missing; expected a string"):
        require(obj, "label", "string", "form[0]", "a.json")
    with pytest.raises(DataError, match=r"field 'form\[0\].gone': is null; expected a list"):
        require(obj, "gone", "list", "form[0]", "a.json")
    assert require(obj, "gone", "list", "form[0]", "a.json", optional=True, default=[]) == []
    assert require(obj, "linking", "list", "form[0]", "a.json", optional=True) is None


def test_read_json_errors(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_bytes(b'{"form": "caf\xe9"}')
    with pytest.raises(DataError, match=r"a.json: file is not UTF-8 text \(byte 13\)"):
        read_json(bad)
    bad.write_text('{"form": [\n  {"id": 0,\n}')
    with pytest.raises(DataError, match=r"invalid JSON at line 3, column 1 "):
        read_json(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_json(tmp_path / "none.json")


def test_accounting_adds_up():
    policy = BadDocuments("skip")
    policy.count(10)
    policy.handle(DataError("broken", "x.json"), "train", "x")
    summary = policy.summary({"train": 6, "eval": 2})
    assert (summary["documents_given"], summary["documents_used"], summary["documents_skipped"],
            summary["documents_not_used"]) == (10, 8, 1, 1)
    assert summary["message"].startswith("documents: 10 given = 8 used (train 6, eval 2) + 1 skipped")
    uncounted = BadDocuments("skip").summary({"train": 3})
    assert uncounted["documents_given"] is None and "does not count" in uncounted["message"]


def test_recipe_that_is_not_yaml_is_one_sentence(tmp_path, capsys):
    from aetnet.cli.main import main
    from aetnet.config.settings import load_recipe_dict

    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: funsd\ntrain:\n  learning_rate: 1e-5\n   batch_size: 2\n")
    # Line 4 "   batch_size: 2": the ':' after batch_size (column 14) cannot start a mapping there.
    with pytest.raises(AetnetError) as err:
        load_recipe_dict(recipe)
    message = str(err.value)
    assert message.startswith(f"{recipe}: the recipe is not valid YAML at line 4, column 14 (")
    assert "check the indentation" in message and "\n" not in message
    assert main(["finetune", "funsd", "--recipe", str(recipe), "--demo"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"aetnet: error: {message}"
    recipe.write_bytes(b"task: funsd\nname: caf\xe9\n")
    with pytest.raises(AetnetError, match="not UTF-8 text"):
        load_recipe_dict(recipe)


def test_override_that_is_not_yaml():
    from aetnet.config.settings import parse_overrides

    with pytest.raises(AetnetError, match=r"override 'train.seed=\[': the value is not valid YAML at line 1, column 2"):
        parse_overrides(["train.seed=["])
