"""`aetnet serve TOKEN_MODEL --links RELATION_MODEL`: page records carry the key-value pairs that
`PairPredictor` (aetnet predict --entities --links) gives, in JSON and drawn on the page picture."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageChops

from aetnet.errors import AetnetError
from aetnet.train.runner import finetune
from tests.test_serve import InProcessServer, post_file, request


@pytest.fixture(scope="module")
def re_run(aetnet_cache, tmp_path_factory):
    """A tiny relation model whose scorer bias is raised so that it links every candidate pair (a few
    training steps link nothing, and equal empty lists would prove nothing)."""
    import shutil

    from safetensors.torch import load_file, save_file

    run = finetune("funsd-re", base="tiny", demo=True, output=tmp_path_factory.mktemp("re") / "run",
                   overrides=["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=4",
                              "data.max_eval_documents=2"])
    model = tmp_path_factory.mktemp("re-linking") / "model"
    shutil.copytree(run / "model", model)
    weights = load_file(model / "model.safetensors")
    weights["classifier.head_linear.bias"] = weights["classifier.head_linear.bias"] + 1000.0
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    return model


def _picture(record) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(record["image"].split(",", 1)[1]))).convert("RGB")


@pytest.mark.parametrize("how", ["create_app", "workers_env"])
def test_served_records_carry_the_pairs_of_predict(re_run, funsd_run, shared_data, monkeypatch, how):
    from aetnet.predict.pairs import PairPredictor
    from aetnet.predict.predictor import draw_page
    from aetnet.serve.app import app_from_env, create_app, load_predictors
    from aetnet.serve.service import CONFIG_ENV

    page = next((shared_data / "funsd" / "dataset" / "testing_data" / "images").glob("*.png"))
    want = PairPredictor(funsd_run, re_run).predict_file(page)
    assert want[0]["pairs"], "the relation model links nothing on this page: the test could not tell"
    if how == "create_app":
        predictor, linker = load_predictors(str(funsd_run), str(re_run), {})
        app = create_app(predictor, None, linker)
    else:  # what each `--workers N` process builds
        import json

        monkeypatch.setenv(CONFIG_ENV, json.dumps({"model": str(funsd_run), "links": str(re_run), "predictor": {},
                                                   "settings": {}}))
        app = app_from_env()
    with InProcessServer(app) as base:
        status, records, _ = post_file(base, page, query="?visualize=true")
        assert status == 200
        got = records[0]
        assert [(p["key"], p["value"], p["key_box"], p["value_box"]) for p in got["pairs"]] == \
            [(p["key"], p["value"], p["key_box"], p["value_box"]) for p in want[0]["pairs"]]
        assert [p["score"] for p in got["pairs"]] == pytest.approx([p["score"] for p in want[0]["pairs"]], abs=1e-5)
        assert got["links_task"] == "funsd-re"
        assert request(f"{base}/health")[1]["links_task"] == "funsd-re"
        # the picture is the page drawn with its pairs (a line from each key to its value)
        image = Image.open(page).convert("RGB")
        drawn = _picture(got)
        without = draw_page(image, {**got, "pairs": []}).convert("RGB")
        assert ImageChops.difference(drawn, draw_page(image, got).convert("RGB")).getbbox() is None
        assert ImageChops.difference(drawn, without).getbbox() is not None
        status, html, _ = request(base + "/")
        assert "key-value pairs" in html


def test_a_relation_model_alone_cannot_be_served(re_run, funsd_run):
    from aetnet.serve.app import load_predictors

    with pytest.raises(AetnetError, match="--links"):
        load_predictors(str(re_run), None, {})
    with pytest.raises(AetnetError, match="token model"):
        load_predictors(str(re_run), str(re_run), {})


def test_served_pairs_with_an_entity_map(re_run, funsd_run, shared_data, tmp_path, monkeypatch):
    """`serve TOKEN --links KV_RE --entity-map QUESTION=KEY,ANSWER=VALUE`: a relation model of other entity
    types is refused without the map and serves the same pairs as the FUNSD-typed original with it, also in the
    `--workers N` processes (the map travels in $AETNET_SERVE_CONFIG)."""
    import json

    from aetnet.predict.pairs import PairPredictor, parse_entity_map
    from aetnet.serve.app import app_from_env, load_predictors
    from aetnet.serve.service import CONFIG_ENV
    from tests.test_pairs import _key_value_model

    kv = _key_value_model(re_run.parent, tmp_path)  # re_run is the model folder; the helper takes its run
    page = next((shared_data / "funsd" / "dataset" / "testing_data" / "images").glob("*.png"))
    want = PairPredictor(funsd_run, re_run).predict_file(page)[0]["pairs"]
    assert want, "the relation model links nothing on this page: the test could not tell"
    with pytest.raises(AetnetError, match="--entity-map"):
        load_predictors(str(funsd_run), str(kv), {})
    with pytest.raises(AetnetError, match="drop it"):
        load_predictors(str(funsd_run), None, {}, {"QUESTION": "KEY"})
    mapping = parse_entity_map("QUESTION=KEY,ANSWER=VALUE")
    monkeypatch.setenv(CONFIG_ENV, json.dumps({"model": str(funsd_run), "links": str(kv), "entity_map": mapping,
                                               "predictor": {}, "settings": {}}))
    with InProcessServer(app_from_env()) as base:
        status, records, _ = post_file(base, page)
    assert status == 200
    assert [(p["key"], p["value"]) for p in records[0]["pairs"]] == [(p["key"], p["value"]) for p in want]
    assert [p["score"] for p in records[0]["pairs"]] == pytest.approx([p["score"] for p in want], abs=1e-5)
