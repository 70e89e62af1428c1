"""Pre-annotations Label Studio can show: image URLs, the labelling configuration (checked with Label
Studio's own SDK validator), the model version, unique region ids, and key -> value relations that
``convert labelstudio`` reads back with their direction."""

from __future__ import annotations

import json
import shutil

from aetnet.cli.main import main
from aetnet.data.documents.labelstudio_out import predictions_to_tasks

SAMPLE = "funsd/dataset/training_data"
STOCK_OCR_TEMPLATE = """<View>
  <Image name="image" value="$ocr" zoom="true" zoomControl="false" rotateControl="true"/>
  <Labels name="label" toName="image"><Label value="Text"/><Label value="Handwriting"/></Labels>
  <Rectangle name="bbox" toName="image" strokeWidth="3"/>
  <Polygon name="poly" toName="image" strokeWidth="3"/>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true" required="true"
            maxSubmissions="1" rows="5" placeholder="Recognized Text" displayMode="region-list"/>
</View>"""


def _interface(config: str):
    from label_studio_sdk.label_interface import LabelInterface  # the test extra installs it

    return LabelInterface(config)


def test_predict_labelstudio_tasks_pass_the_sdk_validator_against_the_printed_config(
        funsd_run, shared_data, tmp_path, capsys):
    root = tmp_path / "storage"
    (root / "scans" / "b1").mkdir(parents=True)
    page = shutil.copy(shared_data / SAMPLE / "images" / "0000971160.png", root / "scans" / "b1" / "p.png")
    tasks_file = tmp_path / "ls" / "tasks.json"
    assert main(["predict", str(funsd_run / "model"), str(page), "--format", "labelstudio", "--output",
                 str(tasks_file), "--local-files-root", str(root)]) == 0
    capsys.readouterr()
    assert main(["formats", "show", "labelstudio-config", str(funsd_run / "model")]) == 0
    config = capsys.readouterr().out
    assert (tasks_file.parent / "tasks.config.xml").read_text() == config
    for label in ("QUESTION", "ANSWER", "HEADER"):
        assert f'<Label value="{label}"/>' in config
    (task,) = json.loads(tasks_file.read_text())
    assert task["data"]["ocr"] == "/data/local-files/?d=scans/b1/p.png"
    (prediction,) = task["predictions"]
    labelled = [r for r in prediction["result"] if r["type"] == "labels"]
    assert labelled  # the tiny model predicts entities: the validator has labels to check
    assert _interface(config).validate_prediction(prediction, return_errors=True) == []
    # the stock OCR template (labels Text / Handwriting) rejects them: the check is not vacuous
    assert len(_interface(STOCK_OCR_TEMPLATE).validate_prediction(prediction, return_errors=True)) == len(labelled)
    # the model, not its folder, names the version: a copy of the folder elsewhere gives the same one
    assert prediction["model_version"].startswith("aetnet-funsd-full-")
    copy = shutil.copytree(funsd_run / "model", tmp_path / "elsewhere")
    assert main(["predict", str(copy), str(page), "--format", "labelstudio", "--output", str(tmp_path / "t2.json"),
                 "--image-url-prefix", "https://bucket.example/pages/", "--images-root", str(root)]) == 0
    (task2,) = json.loads((tmp_path / "t2.json").read_text())
    assert task2["predictions"][0]["model_version"] == prediction["model_version"]
    assert task2["data"]["ocr"] == "https://bucket.example/pages/scans/b1/p.png"
    assert main(["predict", str(copy), str(page), "--format", "labelstudio", "--output", str(tmp_path / "t3.json"),
                 "--image-url-prefix", "/data/upload/3/"]) == 0
    assert json.loads((tmp_path / "t3.json").read_text())[0]["data"]["ocr"] == "/data/upload/3/p.png"


def test_region_ids_are_unique_within_and_across_tasks():
    record = {"size": [100, 100], "words": [{"text": "a", "box": [0, 0, 10, 10], "score": 0.9},
                                            {"text": "b", "box": [20, 0, 30, 10], "score": 0.9},
                                            {"text": "c", "box": [0, 50, 10, 60], "score": 0.9}],
              "entities": [{"type": "KEY", "words": [0]}]}
    tasks = predictions_to_tasks([record, record], ["x.png", "y.png"], "v")
    ids = [[r["id"] for r in t["predictions"][0]["result"]] for t in tasks]
    regions = [list(dict.fromkeys(i)) for i in ids]
    assert [len(r) for r in regions] == [3, 3]  # a (KEY), b (other words of the line), c (another line)
    assert all(len(i) == 3 * 2 + 1 for i in ids)  # rectangle + transcription (+ label for the entity)
    assert not set(regions[0]) & set(regions[1])


def _funsd_record(shared_data):
    """The real FUNSD page 0000971160 as a token record with its gold entities, and its gold key -> value
    pairs (question -> answer links of the annotation), independently of aetnet's readers."""
    form = json.loads((shared_data / SAMPLE / "annotations" / "0000971160.json").read_text())["form"]
    for e in form:  # words with no text are dropped, as every reader does
        e["words"] = [w for w in e["words"] if w["text"].strip()]
    kept = [e for e in form if e["words"] and e["label"] in ("question", "answer")]
    words, entities, index = [], [], {}
    for e in kept:
        index[e["id"]] = len(entities)
        first = len(words)
        words += [{"text": w["text"], "box": w["box"], "score": 1.0} for w in e["words"]]
        entities.append({"type": e["label"].upper(), "words": list(range(first, len(words))), "box": e["box"]})
    gold = {(a, b) for e in kept for a, b in e["linking"]
            if a in index and b in index and entities[index[a]]["type"] == "QUESTION"
            and entities[index[b]]["type"] == "ANSWER"}
    pairs = [{"key_entity": index[a], "value_entity": index[b], "score": 0.9} for a, b in sorted(gold)]
    texts = {(" ".join(words[i]["text"] for i in entities[index[a]]["words"]),
              " ".join(words[i]["text"] for i in entities[index[b]]["words"])) for a, b in gold}
    return {"size": [762, 1000], "words": words, "entities": entities, "pairs": pairs}, texts


def test_relations_round_trip_with_their_direction(shared_data, tmp_path):
    record, gold = _funsd_record(shared_data)
    assert len(gold) >= 5
    (task,) = predictions_to_tasks([record], ["/data/upload/1/8f1a2b3c-0000971160.png"], "v")
    result = task["predictions"][0]["result"]
    relations = [r for r in result if r["type"] == "relation"]
    assert len(relations) == len(record["pairs"]) and {r["direction"] for r in relations} == {"right"}
    text = {r["id"]: r["value"]["text"][0] for r in result if r["type"] == "textarea"}
    assert {(text[r["from_id"]], text[r["to_id"]]) for r in relations} == gold  # from the key to the value
    from aetnet.data.documents.labelstudio_out import labelling_config

    assert _interface(labelling_config(["QUESTION", "ANSWER"])).validate_prediction(
        task["predictions"][0], return_errors=True) == []
    # accepted in Label Studio unchanged, exported, converted back
    export = [{"id": 1, "data": task["data"], "annotations": [{"id": 1, "result": result}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    out = tmp_path / "back.jsonl"
    assert main(["convert", "labelstudio", str(tmp_path / "export.json"), "--images",
                 str(shared_data / SAMPLE / "images"), "--output", str(out)]) == 0
    assert not out.with_name("back.problems.jsonl").exists()
    (page,) = [json.loads(line) for line in out.read_text().splitlines()]
    segment_text = {}
    for w, s in zip(page["words"], page["segments"]):
        segment_text[s] = f"{segment_text[s]} {w}" if s in segment_text else w
    assert {(segment_text[a], segment_text[b]) for a, b in page["links"]} == gold
    assert len(page["links"]) == len(gold)
