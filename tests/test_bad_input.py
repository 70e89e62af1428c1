"""Bad input: each broken file gets one clear message naming it; with --on-bad-document skip the run
goes on and lists every skipped document in skipped.jsonl."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from aetnet.cli.main import main
from aetnet.data.demo import ensure_demo

BUDGET = ["train.max_steps=2", "train.batch_size=2", "train.save_steps=100", "data.max_eval_documents=2"]


def _entity(i, box, text, label="question", words=None):
    words = words if words is not None else [{"box": box, "text": text}]
    return {"id": i, "box": box, "text": text, "label": label, "words": words, "linking": []}


def _corpus(root):
    """A FUNSD folder: the demo's good documents plus one broken document per kind of bad input."""
    demo = ensure_demo("funsd") / "dataset"
    shutil.copytree(demo, root)
    ann, img = root / "training_data" / "annotations", root / "training_data" / "images"
    size = (500, 650)

    def add(name, form=None, raw=None, image="ok"):
        if raw is not None:
            (ann / f"{name}.json").write_bytes(raw)
        else:
            (ann / f"{name}.json").write_text(json.dumps({"form": form}))
        if image == "ok":
            Image.new("L", size, 255).save(img / f"{name}.png")
        elif image == "corrupt":
            good = img.parent / "tmp.png"
            Image.new("L", size, 255).save(good)
            (img / f"{name}.png").write_bytes(good.read_bytes()[:60])
            good.unlink()

    good_form = [_entity(0, [10, 10, 60, 30], "Name:")]
    cases = {
        "bad_json": dict(raw=b'{"form": [ {"id": 0, '),
        "not_utf8": dict(raw='{"form": [{"text": "caf\xe9"}]}'.encode("latin-1")),
        "missing_field": dict(form=[{"id": 0, "label": "question", "box": [0, 0, 1, 1]}]),
        "unknown_label": dict(form=[_entity(0, [10, 10, 60, 30], "x", label="signature")]),
        "inverted_box": dict(form=[_entity(0, [60, 10, 10, 30], "Name:")]),
        "outside_page": dict(form=[_entity(0, [10, 10, 1500, 30], "Name:")]),
        "normalised": dict(form=[_entity(0, [100, 700, 990, 990], "Name:")]),
        "mismatch": dict(form=[_entity(0, [10, 10, 60, 30], "Name:", words=[{"text": "Name:"}])]),
        "empty_document": dict(form=[]),
        "missing_image": dict(form=good_form, image=None),
        "corrupt_image": dict(form=good_form, image="corrupt"),
    }
    for name, kwargs in cases.items():
        add(name, **kwargs)
    return cases


EXPECTED = {
    "bad_json": "invalid JSON at line 1",
    "not_utf8": "not UTF-8",
    "missing_field": "form[0].words': is missing",
    "unknown_label": "unknown label 'signature'",
    "inverted_box": "inverted",
    "outside_page": "outside the 500x650 page",
    "normalised": "already normalised",
    "mismatch": "form[0].words[0].box': is missing",
    "empty_document": "has no words",
    "missing_image": "no page image found",
    "corrupt_image": "cannot be decoded",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "dataset"
    return root, _corpus(root)


def test_each_bad_document_has_one_clear_error(corpus, tmp_path, capsys):
    root, cases = corpus
    ann = root / "training_data" / "annotations"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for name in cases:
        shutil.move(ann / f"{name}.json", hidden / f"{name}.json")
    try:
        for name, expected in EXPECTED.items():
            shutil.move(hidden / f"{name}.json", ann / f"{name}.json")
            code = main(["finetune", "funsd", "--base", "tiny", "--data", str(root),
                         "--output", str(tmp_path / name), *BUDGET])
            err = capsys.readouterr().err.strip()
            shutil.move(ann / f"{name}.json", hidden / f"{name}.json")
            assert code == 2, (name, err)
            errors = [line for line in err.splitlines() if line.startswith("aetnet: error:")]
            assert "Traceback" not in err and len(errors) == 1, err
            assert expected in errors[0], (name, err)
            assert name in errors[0], (name, err)
    finally:
        for path in hidden.glob("*.json"):
            shutil.move(path, ann / path.name)


def test_skip_records_every_bad_document(corpus, tmp_path):
    root, cases = corpus
    run = tmp_path / "run"
    assert main(["finetune", "funsd", "--base", "tiny", "--data", str(root), "--output", str(run),
                 "--on-bad-document", "skip", *BUDGET]) == 0
    records = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(cases)
    for record in records:
        assert EXPECTED[record["id"]] in record["reason"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_documents"] == len(cases)
    good = len(list((ensure_demo("funsd") / "dataset/training_data/annotations").glob("*.json")))
    assert metrics["train_documents"] == good
    # Accounting against the files: every annotation given is used, skipped or beyond the eval limit.
    given = len(list(root.glob("*_data/annotations/*.json")))
    assert metrics["documents_given"] == given and metrics["documents_skipped"] == len(cases)
    assert metrics["documents_used"] + metrics["documents_skipped"] + metrics["documents_not_used"] == given
    assert metrics["documents_used"] == good + metrics["eval_documents"] + metrics.get("validation_documents", 0)


def _bomb_png(path):
    """A valid PNG header declaring 40000 x 40000 pixels (1.6 G) with almost no data."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_everywhere(tmp_path, capsys):
    from aetnet.data.ocr.images import image_size, open_image
    from aetnet.errors import DataError
    from aetnet.tasks.funsd import parse_funsd_annotation

    bomb = _bomb_png(tmp_path / "bomb.png")
    for read in (image_size, open_image):
        with pytest.raises(DataError, match="too large to be a page"):
            read(bomb)
    (tmp_path / "bomb.json").write_text(json.dumps({"form": [_entity(0, [1, 1, 5, 5], "x")]}))
    with pytest.raises(DataError, match="bomb.png.*too large to be a page"):
        parse_funsd_annotation(tmp_path / "bomb.json", bomb)
    from aetnet.data.demo import ensure_demo

    run = ensure_demo("funsd")
    assert main(["finetune", "funsd", "--base", "tiny", "--data", str(run), "--output", str(tmp_path / "r"),
                 *BUDGET]) == 0
    assert main(["predict", str(tmp_path / "r" / "model"), str(bomb)]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aetnet: error:")]
    assert "bomb.png" in error and "too large to be a page" in error


def test_evaluate_applies_the_policy_and_accounts(funsd_run, shared_data, tmp_path, capsys):
    """`aetnet evaluate` reads and screens like finetune: one clear error, or the document skipped,
    listed and counted (given = used + skipped + not used, counted here from the files)."""
    root = tmp_path / "funsd"
    shutil.copytree(shared_data / "funsd" / "dataset", root)
    broken = root / "testing_data" / "annotations" / "broken.json"
    broken.write_text(json.dumps({"form": [{"id": "first", "label": "question", "words": []}]}))
    n_train = len(list((root / "training_data" / "annotations").glob("*.json")))
    n_test = len(list((root / "testing_data" / "annotations").glob("*.json")))
    argv = ["evaluate", str(funsd_run / "model"), "--data", str(root), "data.max_eval_documents=null"]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aetnet: error:")]
    assert "broken.json" in error and "'form[0].id': expected an integer, got the string 'first'" in error
    assert main([*argv, "--output", str(tmp_path / "b"), "--on-bad-document", "skip"]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "b" / "skipped.jsonl").read_text().splitlines()]
    assert record["id"] == "broken"
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    predictions = (tmp_path / "b" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == n_test - 1 == metrics["documents_used"]
    assert (metrics["documents_given"], metrics["documents_skipped"], metrics["documents_not_used"]) == (
        n_train + n_test, 1, n_train)
