"""Key-value pairs: ``aetnet predict --entities TOKEN --links RELATION`` and :class:`PairPredictor`."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from aetnet.cli.main import main
from aetnet.data.documents.relations import document_entities
from aetnet.errors import AetnetError
from aetnet.predict.pairs import PairPredictor, entity_document
from aetnet.train.runner import finetune


@pytest.fixture(scope="module")
def re_run(aetnet_cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("re") / "run"
    return finetune("funsd-re", base="tiny", demo=True, output=run, overrides=[
        "train.max_steps=8", "train.batch_size=4", "train.learning_rate=1e-3", "data.max_train_documents=8",
        "data.max_eval_documents=6"])


def _gold_record(doc):
    """A token record whose entities are the page's gold entities (every label, OTHER included)."""
    ents = document_entities(doc)
    entities = [{"type": e.label, "words": list(range(e.first_word, e.first_word + e.num_words)), "box": e.box}
                for e in ents]
    return {"words": [{"text": w, "box": b} for w, b in zip(doc.words, doc.boxes)], "entities": entities}


def test_link_on_gold_entities_equals_the_evaluation(re_run, funsd_run):
    from aetnet.config.settings import RunConfig
    from aetnet.data.demo import ensure_demo
    from aetnet.data.documents.relations import candidate_pairs, merge_entity_vectors, pair_logits
    from aetnet.data.encoding.windows import WindowDataset
    from aetnet.inference.evaluation import predict_windows
    from aetnet.inference.modelio import get_task, load_model
    from aetnet.tasks.funsd import load_funsd

    pages = load_funsd(str(ensure_demo("funsd-re")))["eval"][:6]
    records = [json.loads(line) for line in (re_run / "predictions.jsonl").read_text().splitlines()]
    # the evaluation's own path: every candidate's logit, page by page
    loaded, task, cfg = load_model(re_run), get_task("funsd-re"), RunConfig(task="funsd-re")
    cfg.data.box_level, cfg.data.max_length = loaded.meta["box_level"], loaded.meta["max_length"]
    windows = task.encode(pages, loaded.processor.tokenizer, None, cfg)
    outputs = predict_windows(loaded.model, WindowDataset(windows, pages, loaded.processor.image_processor), 4,
                              "relation", loaded.processor.tokenizer.pad_token_id)
    entities = [document_entities(d) for d in pages]
    merged = merge_entity_vectors(windows, outputs, [len(e) for e in entities])
    predictor = PairPredictor(funsd_run, re_run)
    for doc, ents, vectors, record in zip(pages, entities, merged, records):
        assert record["id"] == doc.id
        pairs = candidate_pairs(ents)
        want = [(ents[h].text, ents[t].text, x) for (h, t), x in zip(pairs, pair_logits(vectors, pairs))]
        got = predictor.score_pairs(doc.load_image(), _gold_record(doc))
        assert len(got) == len(want) > 0
        assert [(h.text, t.text) for h, t, _ in got] == [w[:2] for w in want]
        assert [x for _, _, x in got] == pytest.approx([w[2] for w in want], abs=1e-4)
        linked = predictor.link(doc.load_image(), _gold_record(doc))
        assert [(p["key"], p["value"]) for p in linked] == [(p["key"], p["value"]) for p in record["pred"]]
        for p in linked:
            assert 0.5 < p["score"] <= 1.0 and len(p["key_box"]) == 4 and len(p["value_box"]) == 4


def test_entity_document_hand_worked():
    words = ["Name:", "John", "Smith", "page", "1"]
    boxes = [[10, 10, 50, 20], [60, 10, 90, 20], [95, 10, 130, 20], [10, 100, 40, 110], [45, 100, 50, 110]]
    entities = [{"type": "QUESTION", "words": [0], "box": [10, 10, 50, 20]},
                {"type": "ANSWER", "words": [1, 2], "box": [60, 10, 130, 20]}]
    doc = entity_document(words, boxes, entities, (200, 200))
    assert doc.labels == ["B-QUESTION", "B-ANSWER", "I-ANSWER", "O", "O"]
    ents = document_entities(doc)
    assert [(e.label, e.text) for e in ents] == [("QUESTION", "Name:"), ("ANSWER", "John Smith"), ("OTHER", "page 1")]
    assert ents[1].box == [60, 10, 130, 20]


def test_page_without_questions_gives_no_pairs(re_run, funsd_run):
    predictor = PairPredictor(funsd_run, re_run)
    record = {"words": [{"text": "Total", "box": [10, 10, 50, 20]}],
              "entities": [{"type": "ANSWER", "words": [0], "box": [10, 10, 50, 20]}]}
    assert predictor.link(Image.new("RGB", (200, 200), "white"), record) == []
    assert predictor.link(Image.new("RGB", (200, 200), "white"), {"words": [], "entities": []}) == []


def test_models_of_the_wrong_kind_fail_clearly(re_run, funsd_run):
    with pytest.raises(AetnetError, match="relation model"):
        PairPredictor(funsd_run, funsd_run)
    with pytest.raises(AetnetError, match="token model"):
        PairPredictor(re_run, re_run)


def test_cli_pairs_with_visualize(re_run, funsd_run, tmp_path):
    from aetnet.data.demo import ensure_demo

    page = sorted((ensure_demo("funsd-re") / "dataset" / "testing_data" / "images").glob("*.png"))[0]
    out = tmp_path / "out"
    assert main(["predict", "--entities", str(funsd_run), "--links", str(re_run), str(page), "--output", str(out),
                 "--visualize"]) == 0
    (record,) = json.loads((out / f"{page.stem}.json").read_text())
    assert isinstance(record["pairs"], list) and record["links_task"] == "funsd-re"
    keys = {e["text"] for e in record["entities"] if e["type"] == "QUESTION"}
    values = {e["text"] for e in record["entities"] if e["type"] == "ANSWER"}
    for pair in record["pairs"]:
        assert pair["key"] in keys and pair["value"] in values and set(pair) == {
            "key", "value", "key_box", "value_box", "score", "key_entity", "value_entity"}
        key, value = record["entities"][pair["key_entity"]], record["entities"][pair["value_entity"]]
        assert (key["text"], key["type"], value["text"], value["type"]) == (pair["key"], "QUESTION", pair["value"],
                                                                            "ANSWER")
    assert Image.open(out / f"{page.stem}-page1.png").size == Image.open(page).size
    assert main(["predict", str(re_run), str(page)]) == 2  # a relation model alone: one clear error
    assert main(["predict", "--links", str(re_run), str(page)]) == 2


def test_onnx_export_gives_the_same_pair_scores(re_run, funsd_run, tmp_path):
    from aetnet.data.demo import ensure_demo
    from aetnet.export.folder import export_model
    from aetnet.tasks.funsd import load_funsd

    exported = {}
    for name, run in (("token", funsd_run), ("links", re_run)):
        exported[name] = tmp_path / name
        export_model(run, exported[name], onnx=True, quantize=name == "links")
    meta = json.loads((exported["links"] / "aetnet.json").read_text())
    assert meta["kind"] == "relation" and meta["onnx"]["max_abs_diff"] <= 1e-4
    assert meta["onnx"]["inputs"][-2:] == ["entity_positions", "entity_labels"]
    assert (exported["links"] / "model.int8.onnx").is_file() and "int8" in meta["onnx"]
    assert meta["relations"]["rule"] == [["QUESTION", "ANSWER"]]
    doc = load_funsd(str(ensure_demo("funsd-re")))["eval"][0]
    record = _gold_record(doc)
    torch_scores = PairPredictor(funsd_run, re_run).score_pairs(doc.load_image(), record)
    onnx_scores = PairPredictor(exported["token"], exported["links"], backend="onnx").score_pairs(
        doc.load_image(), record)
    assert len(onnx_scores) == len(torch_scores) > 0
    assert [(h.id, t.id) for h, t, _ in onnx_scores] == [(h.id, t.id) for h, t, _ in torch_scores]
    assert [x for _, _, x in onnx_scores] == pytest.approx([x for _, _, x in torch_scores], abs=1e-3)


def test_cli_pairs_on_a_pages_file(re_run, funsd_run, tmp_path):
    from aetnet.data.demo import ensure_demo
    from aetnet.tasks.funsd import load_funsd

    doc = load_funsd(str(ensure_demo("funsd-re")))["eval"][0]
    pages = tmp_path / "pages.jsonl"
    pages.write_text(json.dumps({"id": doc.id, "image": str(doc.image_path), "words": doc.words,
                                 "boxes": doc.boxes.tolist()}) + "\n")
    out = tmp_path / "out"
    assert main(["predict", "--entities", str(funsd_run), "--links", str(re_run), str(pages), "--output",
                 str(out)]) == 0
    (record,) = json.loads((out / "pages.json").read_text())
    assert record["words"] and isinstance(record["pairs"], list) and record["links_task"] == "funsd-re"
    # the pairs are exactly the linked candidates of the token model's own entities
    want = PairPredictor(funsd_run, re_run).link(doc.load_image(), record)
    assert [(p["key"], p["value"]) for p in record["pairs"]] == [(p["key"], p["value"]) for p in want]


def test_pairs_on_a_real_funsd_page(re_run, funsd_run, shared_data):
    """A real scan through OCR, the token model and the relation model: pairs join the page's own
    QUESTION and ANSWER entities, and equal the candidates scored above 0.5."""
    image = shared_data / "funsd" / "dataset" / "testing_data" / "images" / "82092117.png"
    predictor = PairPredictor(funsd_run, re_run)
    (record,) = predictor.predict_file(image)
    assert record["words"] and record["source"] == "ocr"
    scored = predictor.score_pairs(Image.open(image).convert("RGB"), record)
    n_q = sum(1 for e in record["entities"] if e["type"] == "QUESTION")
    n_a = sum(1 for e in record["entities"] if e["type"] == "ANSWER")
    assert len(scored) == n_q * n_a
    assert [(p["key"], p["value"]) for p in record["pairs"]] == [(h.text, t.text) for h, t, x in scored if x > 0]


def test_labelstudio_pre_annotations_carry_the_pairs_as_relations(re_run, funsd_run, tmp_path, monkeypatch):
    """``predict --format labelstudio --entities --links``: one relation per predicted pair, from the key's
    region to the value's (direction right), and convert reads them back as [key, value] links.

    The tiny relation model trained for 8 steps links no pair on these pages; its logits are lifted
    above 0 (every scored candidate pair becomes a link) so that there are relations to write and read.
    """
    from aetnet.data.demo import ensure_demo

    scored = PairPredictor.score_pairs
    monkeypatch.setattr(PairPredictor, "score_pairs",
                        lambda self, image, record: [(h, t, abs(x) + 1.0) for h, t, x in scored(self, image, record)])

    folder = ensure_demo("funsd-re") / "dataset" / "testing_data" / "images"
    pages = sorted(folder.glob("*.png"))[:2]
    tasks_file = tmp_path / "tasks.json"
    assert main(["predict", "--entities", str(funsd_run), "--links", str(re_run), *map(str, pages),
                 "--format", "labelstudio", "--output", str(tasks_file)]) == 0
    assert main(["predict", "--entities", str(funsd_run), "--links", str(re_run), *map(str, pages),
                 "--output", str(tmp_path / "json")]) == 0
    records = [json.loads((tmp_path / "json" / f"{p.stem}.json").read_text())[0] for p in pages]
    tasks = json.loads(tasks_file.read_text())
    assert "+aetnet-funsd-re-" in tasks[0]["predictions"][0]["model_version"]
    export, want = [], []
    for k, (task, record) in enumerate(zip(tasks, records)):
        result = task["predictions"][0]["result"]
        text = {r["id"]: r["value"]["text"][0] for r in result if r["type"] == "textarea"}
        relations = [r for r in result if r["type"] == "relation"]
        assert sorted((text[r["from_id"]], text[r["to_id"]], r["direction"]) for r in relations) == \
            sorted((p["key"], p["value"], "right") for p in record["pairs"])
        want.append(sorted((p["key"], p["value"]) for p in record["pairs"]))
        export.append({"id": k, "data": task["data"], "annotations": [{"result": result}]})
    assert any(want)  # the tiny models link some pairs: the relations are there to round-trip
    (tmp_path / "export.json").write_text(json.dumps(export))
    out = tmp_path / "back.jsonl"
    assert main(["convert", "labelstudio", str(tmp_path / "export.json"), "--images", str(folder),
                 "--output", str(out)]) == 0
    got = []
    for line in out.read_text().splitlines():
        page = json.loads(line)
        seg = {}
        for w, s in zip(page["words"], page["segments"]):
            seg[s] = f"{seg[s]} {w}" if s in seg else w
        got.append(sorted((seg[a], seg[b]) for a, b in page.get("links", [])))
    assert got == want


def _key_value_model(re_run, folder):
    """The relation model re-typed as an own-pages ``re`` model of KEY/VALUE entities (same weights, the
    types renamed in place: HEADER, KEY, VALUE, OTHER), as a model trained on KEY -> VALUE links is."""
    import shutil

    model = folder / "kv"
    shutil.copytree(re_run / "model", model)
    meta = json.loads((model / "aetnet.json").read_text())
    assert meta["relations"] == {"labels": ["HEADER", "QUESTION", "ANSWER", "OTHER"],
                                 "rule": [["QUESTION", "ANSWER"]], "ordered": False, "protocol": "page"}
    meta["relations"] = {"labels": ["HEADER", "KEY", "VALUE", "OTHER"], "rule": [["KEY", "VALUE"]], "ordered": False,
                         "protocol": "page"}
    (model / "aetnet.json").write_text(json.dumps(meta))
    return model


def test_entity_types_matching_no_linked_pair_are_refused_or_mapped(re_run, funsd_run, tmp_path, capsys):
    from aetnet.data.demo import ensure_demo
    from aetnet.tasks.funsd import load_funsd

    kv = _key_value_model(re_run, tmp_path)
    with pytest.raises(AetnetError) as err:
        PairPredictor(funsd_run, kv)
    message = str(err.value)
    assert "finds entity types ANSWER, HEADER, QUESTION, but the relation model" in message
    assert "links KEY -> VALUE: no pair could ever be found" in message and "--entity-map" in message
    for bad, text in (({"TOTAL": "KEY"}, "has no entity type TOTAL"), ({"QUESTION": "PRICE"}, "has no entity type "
                      "PRICE"), ({"QUESTION": "KEY"}, "no pair could ever be found")):
        with pytest.raises(AetnetError, match=text):
            PairPredictor(funsd_run, kv, entity_map=bad)
    # mapped, the same weights score the same pairs as the QUESTION/ANSWER model does unmapped
    doc = load_funsd(str(ensure_demo("funsd-re")))["eval"][0]
    record = _gold_record(doc)
    want = PairPredictor(funsd_run, re_run).score_pairs(doc.load_image(), record)
    got = PairPredictor(funsd_run, kv, entity_map={"QUESTION": "KEY", "ANSWER": "VALUE"}).score_pairs(
        doc.load_image(), record)
    assert len(got) == len(want) > 0
    assert [(h.text, t.text) for h, t, _ in got] == [(h.text, t.text) for h, t, _ in want]
    assert [x for _, _, x in got] == pytest.approx([x for _, _, x in want], abs=1e-5)
    # the command line: refused without the map (exit 2, one line), pairs with it
    page = sorted((ensure_demo("funsd-re") / "dataset" / "testing_data" / "images").glob("*.png"))[0]
    assert main(["predict", "--entities", str(funsd_run), "--links", str(kv), str(page)]) == 2
    assert "--entity-map" in capsys.readouterr().err
    assert main(["predict", "--entities", str(funsd_run), "--links", str(kv), str(page),
                 "--entity-map", "QUESTION"]) == 2
    assert "is not TOKEN_TYPE=RELATION_TYPE" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["predict", "--entities", str(funsd_run), "--links", str(kv), str(page), "--output", str(out),
                 "--entity-map", "QUESTION=KEY, ANSWER=VALUE"]) == 0
    (record,) = json.loads((out / f"{page.stem}.json").read_text())
    assert isinstance(record["pairs"], list) and {e["type"] for e in record["entities"]} <= {
        "QUESTION", "ANSWER", "HEADER"}  # the records keep the token model's own type names
