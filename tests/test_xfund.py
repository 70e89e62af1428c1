"""XFUND: the release read as published (tests/data/xfund: Chinese and Japanese val, Portuguese train),
inspect's per-language counts against an independent count of the JSON, missing files, bad input,
images from the release zips, and finetune end to end (xfund with full on the tiny base, lora and aet on
the tiny LayoutLMv3-Chinese, and the encoding recorded for predict; xfund-re with all)."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from aetnet.errors import AetnetError, DataError

LANGS = ("zh", "ja", "es", "fr", "it", "de", "pt")
SAMPLES = {"zh": "val", "ja": "val", "pt": "train"}
BUDGET = ["train.max_steps=2", "train.batch_size=2", "train.logging_steps=1", "train.save_steps=2",
          "data.max_length=128", "data.stride=32", "aet.queue_size=4"]


def _release(folder: Path, sample: Path, files: dict[tuple[str, str], str], zipped: bool = False) -> Path:
    """A release folder ``xx.split.json`` (+ images) for each ``(lang, split)``, holding the forms of the
    sample language given as value (renamed to the new language and split); images beside the JSON, or
    in ``xx.split.zip`` when ``zipped``."""
    folder.mkdir(parents=True, exist_ok=True)
    for (lang, split), source in files.items():
        data = json.loads((sample / f"{source}.{SAMPLES[source]}.json").read_text(encoding="utf-8"))
        data["lang"] = lang
        archive = zipfile.ZipFile(folder / f"{lang}.{split}.zip", "w") if zipped else None
        for n, doc in enumerate(data["documents"]):
            old = doc["img"]["fname"]
            doc["id"], doc["img"]["fname"] = f"{lang}_{split}_{n}", f"{lang}_{split}_{n}.jpg"
            if archive is not None:
                archive.write(sample / old, doc["img"]["fname"])
            else:
                shutil.copy(sample / old, folder / doc["img"]["fname"])
        if archive is not None:
            archive.close()
        (folder / f"{lang}.{split}.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return folder


def _independent_counts(folder: Path) -> dict[str, dict[str, dict]]:
    """Per split, per language: forms, entities, words, entity labels and distinct links, counted from the
    JSON files with plain json."""
    out: dict[str, dict[str, dict]] = {"train": {}, "eval": {}}
    for path in sorted(folder.glob("*.json")):
        lang, split = path.name.split(".")[:2]
        docs = json.loads(path.read_text(encoding="utf-8"))["documents"]
        entities = [e for d in docs for e in d["document"]]
        out["train" if split == "train" else "eval"][lang] = {
            "documents": len(docs),
            "entities": len(entities),
            "words": sum(len(e["words"]) for e in entities),
            "labels": dict(sorted(Counter(e["label"] for e in entities).items())),
            "links": sum(len({tuple(sorted(p)) for e in d["document"] for p in e["linking"]}) for d in docs),
        }
    return out


def _inspect(capsys, *args) -> dict:
    from aetnet.cli.main import main

    assert main(["inspect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_counts_every_language_as_the_json_holds_it(aetnet_cache, shared_data, capsys):
    folder = shared_data / "xfund"
    stats = _inspect(capsys, "xfund", "--data", str(folder), "--lang", "all")
    expected = _independent_counts(folder)
    assert {split: stats[split]["languages"] for split in ("train", "eval")} == expected
    assert set(expected["eval"]) == {"zh", "ja"} and set(expected["train"]) == {"pt"}
    assert expected["eval"]["zh"]["links"] > 0 and expected["eval"]["ja"]["words"] > 0
    one = _inspect(capsys, "xfund-re", "--data", str(folder), "--lang", "ja")
    assert one["eval"]["languages"] == {"ja": expected["eval"]["ja"]} and one["train"]["languages"] == {}


def test_finetune_names_the_missing_file(aetnet_cache, shared_data, tmp_path):
    from aetnet.train.runner import finetune

    folder = shared_data / "xfund"
    with pytest.raises(AetnetError, match=r"zh\.train\.json: missing") as err:
        finetune("xfund", base="tiny", data=str(folder), output=tmp_path / "a", overrides=["data.lang=zh"])
    assert "zh.val.json" in str(err.value)  # what the folder has
    with pytest.raises(AetnetError, match=r"de\.val\.json") as err:  # a language with no file at all
        finetune("xfund-re", base="tiny", data=str(folder), output=tmp_path / "b", overrides=["data.lang=de"])
    with pytest.raises(AetnetError, match=r"zh\.train\.json: missing \(11 XFUND file"):
        finetune("xfund", base="tiny", data=str(folder), output=tmp_path / "c", overrides=["data.lang=all"])


def test_lang_is_checked_and_only_for_xfund(tmp_path):
    from aetnet.config.settings import resolve_config

    with pytest.raises(AetnetError, match="data.lang='en' is not valid"):
        resolve_config({}, {"task": "xfund", "data": {"lang": "en"}})
    with pytest.raises(AetnetError, match="data.lang .--lang. applies to the tasks xfund, xfund-re"):
        resolve_config({}, {"task": "funsd", "data": {"lang": "zh"}})


def test_demo_points_to_data(tmp_path):
    from aetnet.train.runner import finetune

    with pytest.raises(AetnetError, match="xfund has no demo data .* pass --data"):
        finetune("xfund", base="tiny", demo=True, output=tmp_path / "run", overrides=BUDGET)


def _read(folder: Path, lang: str, split: str):
    from aetnet.data.documents.xfund import read_xfund_file

    return read_xfund_file(folder, lang, split)


@pytest.mark.parametrize("change, field, says", [
    (lambda d: d["documents"][0]["document"][2].update(label="key"), "documents[0].document[2].label",
     "unknown label 'key'"),
    (lambda d: d["documents"][0]["document"][1]["words"][0].pop("box"), "documents[0].document[1].words[0].box",
     "is missing"),
    (lambda d: d["documents"][1]["img"].update(width="wide"), "documents[1].img.width", "expected an integer"),
    (lambda d: d["documents"][0]["document"][3]["linking"].append([d["documents"][0]["document"][3]["id"], 9999]),
     "documents[0].document[3].linking[0]", "names entity 9999"),
    (lambda d: d["documents"][2]["img"].update(fname="nowhere.jpg"), "documents[2].img.fname",
     "page image 'nowhere.jpg' not found"),
    (lambda d: d["documents"][0]["img"].update(width=1000), "documents[0].img", "2480x3508 pixels but the JSON"),
])
def test_bad_input_is_one_error_naming_file_and_field(shared_data, tmp_path, change, field, says):
    folder = _release(tmp_path / "x", shared_data / "xfund", {("zh", "val"): "zh"})
    path = folder / "zh.val.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError) as err:
        _read(folder, "zh", "val")
    assert err.value.field == field and says in str(err.value) and str(path) in str(err.value)


def test_bad_form_is_skipped_and_listed(shared_data, tmp_path):
    from aetnet.data.documents.screen import BadDocuments
    from aetnet.data.documents.xfund import read_xfund_file

    folder = _release(tmp_path / "x", shared_data / "xfund", {("ja", "val"): "ja"})
    path = folder / "ja.val.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["documents"][1]["document"][0]["label"] = "key"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    policy = BadDocuments("skip")
    docs = read_xfund_file(folder, "ja", "val", policy)
    assert [d.id for d in docs] == ["ja_val_0", "ja_val_2"]
    (skipped,) = policy.records
    assert skipped["id"] == "ja_val_1" and "unknown label 'key'" in skipped["reason"]


def test_images_from_the_release_zip_equal_the_files(shared_data, tmp_path):
    from aetnet.data.documents.xfund import read_xfund_file

    files = {("zh", "val"): "zh"}
    plain = read_xfund_file(_release(tmp_path / "plain", shared_data / "xfund", files), "zh", "val")
    zipped = read_xfund_file(_release(tmp_path / "zipped", shared_data / "xfund", files, zipped=True), "zh", "val")
    assert not list((tmp_path / "zipped").glob("*.jpg"))
    for a, b in zip(plain, zipped):
        assert b.image_path is None and b.image_ref is not None
        assert a.page_size == b.page_size == (2480, 3508)
        assert np.array_equal(np.asarray(a.load_image()), np.asarray(b.load_image()))  # every pixel


@pytest.mark.parametrize(("strategy", "base"), [("full", "tiny"), ("lora", "tiny-layoutlmv3-chinese"),
                                               ("aet", "tiny-layoutlmv3-chinese")])
def test_finetune_xfund_zh(aetnet_cache, shared_data, tmp_path, strategy, base, caplog):
    from aetnet.cli.main import main

    folder = _release(tmp_path / "xfund", shared_data / "xfund", {("zh", "train"): "zh", ("zh", "val"): "zh"},
                      zipped=strategy == "lora")
    run = tmp_path / "run"
    assert main(["finetune", "xfund", "--lang", "zh", "--base", base, "--strategy", strategy, "--data", str(folder),
                 "--output", str(run), *BUDGET]) == 0
    saved = json.loads((run / "model" / "aetnet.json").read_text())
    assert saved["strategy"] == strategy and saved["encoding"] == "xfund-entity-text"
    # predict tokenises word by word: loading the model says so (docs/export-predict-serve.md)
    from aetnet.predict.predictor import Predictor

    with caplog.at_level("WARNING", logger="aetnet.predict.predictor"):
        Predictor(run / "model")
    assert "trained on the reference XFUND encoding" in caplog.text
    metrics = json.loads((run / "metrics.json").read_text())
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert metrics["eval_split"] == "val" and metrics["languages"] == ["zh"]
    assert [r["lang"] for r in records] == ["zh"] * 3
    assert metrics["f1_zh"] == metrics["f1"] == metrics["f1_language_mean"]
    # every token of the three forms is scored: as many as the XFUND encoding gives
    assert all(len(r["gold"]) == len(r["pred"]) > 100 for r in records)
    assert main(["evaluate", str(run / "model"), "--data", str(folder), "--lang", "zh", "--output",
                 str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert {k: again[k] for k in ("f1", "precision", "recall", "f1_zh")} == pytest.approx(
        {k: metrics[k] for k in ("f1", "precision", "recall", "f1_zh")})


def test_finetune_xfund_re_all_languages(aetnet_cache, shared_data, tmp_path):
    from aetnet.cli.main import main

    sources = {lang: ("zh", "ja", "pt")[i % 3] for i, lang in enumerate(LANGS)}
    files = {(lang, split): sources[lang] for lang in LANGS for split in ("train", "val")}
    folder = _release(tmp_path / "xfund", shared_data / "xfund", files)
    run = tmp_path / "run"
    assert main(["finetune", "xfund-re", "--lang", "all", "--base", "tiny", "--data", str(folder), "--output",
                 str(run), *BUDGET, "data.max_train_documents=4", "data.max_eval_documents=4"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pages"] == 4 and metrics["gold_links"] > 0 and metrics["eval_split"] == "val"


def test_all_reports_every_language_and_their_mean():
    """``evaluate`` of the xfund task on hand-made windows: per-language F1 and their mean, by hand."""
    import numpy as np

    import aetnet.tasks  # noqa: F401
    from aetnet.data.documents.document import Document
    from aetnet.data.encoding.windows import Window
    from aetnet.registry import TASKS

    task = TASKS.get("xfund")()
    labels = task.label_list()
    ids = {name: i for i, name in enumerate(labels)}

    def doc(lang):
        return Document(id=lang, words=["a"], boxes=[[0, 0, 1, 1]], page_size=(10, 10), meta={"lang": lang})

    def window(index, gold):
        return Window(index, [0, *range(len(gold)), 2], [[0, 0, 0, 0]] * (len(gold) + 2),
                      [None, *range(len(gold)), None], [-100, *(ids[g] for g in gold), -100])

    def logits(pred):
        out = np.zeros((len(pred) + 2, len(labels)))
        for t, name in enumerate(pred):
            out[t + 1, ids[name]] = 5.0
        return out

    gold_zh = ["B-QUESTION", "I-QUESTION", "B-ANSWER", "O"]       # 2 entities, 1 found: P 1/1, R 1/2
    pred_zh = ["B-QUESTION", "I-QUESTION", "O", "O"]
    gold_pt = ["B-HEADER", "O", "B-ANSWER"]                       # 2 entities, 2 predicted, 1 right
    pred_pt = ["B-HEADER", "O", "B-QUESTION"]
    metrics, records = task.evaluate([doc("zh"), doc("pt")], [window(0, gold_zh), window(1, gold_pt)],
                                     [logits(pred_zh), logits(pred_pt)], dict(enumerate(labels)))
    assert metrics["languages"] == ["zh", "pt"]
    assert metrics["f1_zh"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert metrics["f1_pt"] == pytest.approx(0.5)
    assert metrics["f1_language_mean"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert metrics["f1"] == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))  # micro: 2 right of 3 / 4
    assert [r["pred"] for r in records] == [pred_zh, pred_pt]


def test_window_cache_key_sees_the_entity_texts(shared_data):
    """The xfund encoding tokenises entity texts, not words: a text changed with the same words (XFUND's
    "CITYCOUNCIL" over the words CITY, COUNCIL) gives other windows, so another cache entry."""
    from aetnet.data.documents.xfund import read_xfund_file
    from aetnet.data.encoding.key import examples_digest

    docs = read_xfund_file(shared_data / "xfund", "zh", "val")
    before = examples_digest(docs)
    texts = docs[0].meta["segment_texts"]
    seg = next(iter(texts))
    texts[seg] = texts[seg] + " x"
    assert examples_digest(docs) != before
