"""Property-style bad-input test over every reader, on the real samples in tests/data.

Each case corrupts ONE field of one real file (wrong type, missing, null, empty, out of range,
non-UTF-8, invalid JSON) in a small dataset whose other files are untouched, then runs the reader
through the CLI (``aetnet inspect --check``, in-process: readers and screening only, no tokenizer,
no model) twice:

* ``--on-bad-document error``: exit status 2, exactly one ``aetnet: error:`` line, no exception
  escaping ``main``, the corrupted file named, and for a type error the field path named;
* ``--on-bad-document skip``: exit status 0, exactly that document (file, row, label line or
  question) in the ``--skipped`` file, every other one used, and the logged accounting
  ``N given = U used ... + 1 skipped`` with N and U counted here from the files.

Failures are collected over all cases and reported together. A few real subprocess runs check
the installed command's exit status and stderr.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aetnet.cli.main import main

MISSING = object()  # "delete this key"

#: Wrong-type values per expected kind (none of them may be accepted).
WRONG = {
    "number": ["12a", [], True],
    "integer": ["x", 1.5, {}],
    "string": [5, []],
    "text": [[], {}],
    "list": ["x", 5, {}],
    "object": ["x", 5, []],
    "box": ["x", {}, [1, 2, 3], ["12a", 2, 3, 4], [1, None, 3, 4]],
}


def bad_values(kind: str, required: bool = True, element: bool = False) -> list[tuple[str, Any]]:
    """(kind of corruption, value) pairs for a field of ``kind``: wrong types, and missing/null when
    the field is required (a list element can be null but not missing)."""
    out = [("wrong type", v) for v in WRONG[kind]]
    if required or element:
        out.append(("null", None))
    if required and not element:
        out.append(("missing", MISSING))
    return out


def path_name(path: tuple) -> str:
    """``("form", 3, "words", 0, "box")`` -> ``form[3].words[0].box`` (as the readers name fields)."""
    out = ""
    for key in path:
        out = f"{out}[{key}]" if isinstance(key, int) else (f"{out}.{key}" if out else key)
    return out


def corrupt(data: Any, path: tuple, value: Any) -> Any:
    """A deep copy of ``data`` with the field at ``path`` set to ``value`` (deleted for MISSING)."""
    data = copy.deepcopy(data)
    if not path:
        return value
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


class Case:
    """One corruption: the bytes of the broken file, what the error must name, the expected counts."""

    def __init__(self, name: str, kind: str, content: bytes, field: str | None, given: int, used: int, named: str,
                 skipped: int = 1):
        self.name, self.kind, self.content, self.field = name, kind, content, field
        self.given, self.used, self.named, self.skipped = given, used, named, skipped


def json_cases(data: Any, spec: list[tuple[tuple, list[tuple[str, Any]]]], given: int, used: int,
               named: str, label: str, skipped: int = 1) -> list[Case]:
    """Cases from a spec of (field path, corruptions); type errors must name the field path."""
    cases = []
    for path, corruptions in spec:
        for kind, value in corruptions:
            field = path_name(path) if kind in ("wrong type", "missing", "null") and path else None
            cases.append(Case(f"{label} {path_name(path) or '<root>'} {kind} {value!r}", kind,
                              json.dumps(corrupt(data, path, value)).encode("utf-8"), field, given, used, named,
                              skipped))
    return cases


def file_cases(data: Any, given: int, used: int, named: str, label: str, skipped: int = 1) -> list[Case]:
    """Whole-file corruptions: a non-UTF-8 byte inside a string, truncated JSON, a JSON list."""
    text = json.dumps(data).encode("utf-8")
    cut = text.index(b'"', len(text) // 2) + 1
    broken = {"non-UTF-8": text[:cut] + b"\xe9\xff" + text[cut:], "invalid JSON": text[: len(text) // 2],
              "wrong type": b"[]"}
    return [Case(f"{label} {kind}", kind, content, None, given, used, named, skipped)
            for kind, content in broken.items()]


#: OCR in this process: every page here is in the OCR cache after its first run, and a process pool
#: per run would only add start-up time (the pool's own reporting is checked separately below).
EXTRA = {"rvl-cdip": ["data.ocr_workers=1"], "docvqa": ["data.ocr_workers=1"]}


def run_case(task: str, data: Path, case: Case, tmp: Path, capsys, caplog) -> list[str]:
    """Both modes on ``data`` (which holds ``case``); the list of broken promises (empty when fine)."""
    problems = []
    try:
        code = main(["inspect", task, "--data", str(data), "--json", "--check", *EXTRA.get(task, [])])
    except BaseException as exc:  # noqa: BLE001 - any escape is the failure being looked for
        return [f"{case.name}: error mode raised {type(exc).__name__}: {exc}"]
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("aetnet: error:")]
    if code != 2 or len(errors) != 1 or "Traceback" in err:
        return [f"{case.name}: error mode gave exit {code} and {len(errors)} error lines: {err[-300:]!r}"]
    if case.named not in errors[0]:
        problems.append(f"{case.name}: the error does not name {case.named}: {errors[0]}")
    if case.field and f"field '{case.field}" not in errors[0]:  # the field or one inside it
        problems.append(f"{case.name}: the error does not name field {case.field}: {errors[0]}")
    skipped = tmp / "skipped.jsonl"
    caplog.clear()
    try:
        code = main(["inspect", task, "--data", str(data), "--json", "--check", "--on-bad-document", "skip",
                     "--skipped", str(skipped), *EXTRA.get(task, [])])
    except BaseException as exc:  # noqa: BLE001
        return problems + [f"{case.name}: skip mode raised {type(exc).__name__}: {exc}"]
    out = capsys.readouterr()
    if code != 0:
        return problems + [f"{case.name}: skip mode gave exit {code}: {out.err[-300:]!r}"]
    records = [json.loads(line) for line in skipped.read_text(encoding="utf-8").splitlines()]
    report = json.loads(out.out)
    used, given = sum(report["splits"].values()), report["documents"]["documents_given"]
    if len(records) != case.skipped or not all(case.named in json.dumps(r, ensure_ascii=False) for r in records):
        problems.append(f"{case.name}: skipped.jsonl is {records}, expected {case.skipped} record(s) naming "
                        f"{case.named}")
    if (used, given) != (case.used, case.given):
        problems.append(f"{case.name}: {used} used of {given} given in skip mode, expected {case.used} of {case.given}")
    expected = f"documents: {case.given} given = {case.used} used"
    if expected not in caplog.text or f"+ {case.skipped} skipped" not in caplog.text:
        problems.append(f"{case.name}: no accounting line '{expected} ... + {case.skipped} skipped' in the log")
    return problems


def run_all(task: str, root: Path, target: Path, cases: list[Case], capsys, caplog) -> Counter:
    """Write each case's file to ``target`` (inside ``root``), run it, restore; assert no problem."""
    caplog.set_level(logging.INFO)
    clean = target.read_bytes()
    problems: list[str] = []
    kinds: Counter = Counter()
    for case in cases:
        target.write_bytes(case.content)
        try:
            problems += run_case(task, root, case, root.parent, capsys, caplog)
        finally:
            target.write_bytes(clean)
        kinds[case.kind] += 1
    assert not problems, f"{len(problems)} of {len(cases)} corruptions broke a promise:\n" + "\n".join(problems)
    return kinds


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


# -------------------------------------------------------------------------------------------- FUNSD
FUNSD_FILES = ("0000971160", "0001463448", "0011899960")


def funsd_spec(data: dict, position: int) -> list:
    """Fields of one entity with text (the first, middle or last: ``position`` 0, 1, 2) of a FUNSD annotation."""
    with_text = [i for i, e in enumerate(data["form"]) if any(w["text"].strip() for w in e["words"])]
    spec: list = [(("form",), bad_values("list") + [("empty", [])])]
    for e in (with_text[(len(with_text) - 1) * position // 2],):
        w = next(i for i, word in enumerate(data["form"][e]["words"]) if word["text"].strip())
        word = ("form", e, "words", w)
        box = data["form"][e]["words"][w]["box"]
        spec += [
            (("form", e), bad_values("object", element=True)),
            (("form", e, "id"), bad_values("integer")),
            (("form", e, "label"), bad_values("string") + [("empty", ""), ("out of range", "signature")]),
            (("form", e, "words"), bad_values("list")),
            (word, bad_values("object", element=True)),
            (word + ("text",), bad_values("text")),
            (word + ("box",), bad_values("box") + [
                ("empty", []), ("out of range", [box[2], box[1], box[0] - 5, box[3]]),
                ("out of range", [box[0], box[1], box[2] + 5000, box[3]]),
                ("out of range", [-900, box[1], box[2], box[3]])]),
            (word + ("box", 1), bad_values("number", element=True)),
            (("form", e, "box"), bad_values("box", required=False)),
            (("form", e, "linking"), bad_values("list", required=False) + [("wrong type", [[1]]),
                                                                           ("wrong type", [["a", "b"]])]),
        ]
    return spec


@pytest.fixture
def funsd_root(shared_data, tmp_path) -> Path:
    src = shared_data / "funsd" / "dataset" / "training_data"
    root = tmp_path / "funsd"
    for stem in FUNSD_FILES:
        (root / "training_data" / "annotations").mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "annotations" / f"{stem}.json", root / "training_data" / "annotations" / f"{stem}.json")
        _link(src / "images" / f"{stem}.png", root / "training_data" / "images" / f"{stem}.png")
    return root


def test_funsd_every_corruption(funsd_root, capsys, caplog):
    cases = []
    for position, stem in enumerate(FUNSD_FILES):
        data = json.loads((funsd_root / "training_data" / "annotations" / f"{stem}.json").read_text())
        cases += json_cases(data, funsd_spec(data, position), 3, 2, f"{stem}.json", f"funsd:{stem}")
        cases += file_cases(data, 3, 2, f"{stem}.json", f"funsd:{stem}")
    # One file at a time: the corrupted one must be named, the other two used.
    by_file: dict[str, list[Case]] = {}
    for case in cases:
        by_file.setdefault(case.named, []).append(case)
    total = Counter()
    for name, group in by_file.items():
        total += run_all("funsd", funsd_root, funsd_root / "training_data" / "annotations" / name, group, capsys,
                         caplog)
    assert sum(total.values()) == len(cases) >= 150


# --------------------------------------------------------------------------------------------- CORD
CORD_FILES = ("receipt_00000", "receipt_00040", "receipt_00080")


def cord_spec(data: dict, position: int) -> list:
    """Fields of one line (the first, middle or last: ``position`` 0, 1, 2) of a CORD annotation, and its
    page size."""
    lines = data["valid_line"]
    spec: list = [
        (("valid_line",), bad_values("list") + [("empty", [])]),
        (("meta",), bad_values("object", required=False)),
        (("meta", "image_size"), bad_values("object", required=False)),
        (("meta", "image_size", "width"), bad_values("integer") + [("out of range", 0), ("out of range", -864),
                                                                  ("out of range", 10)]),
    ]
    for i in ((len(lines) - 1) * position // 2,):
        word = ("valid_line", i, "words", 0)
        spec += [
            (("valid_line", i), bad_values("object", element=True)),
            (("valid_line", i, "category"), bad_values("string") + [("empty", ""), ("out of range", "menu.bogus")]),
            (("valid_line", i, "group_id"), bad_values("integer", required=False)),
            (("valid_line", i, "words"), bad_values("list")),
            (word, bad_values("object", element=True)),
            (word + ("text",), bad_values("text")),
            (word + ("quad",), bad_values("object") + [("empty", {})]),
            # The reference clips a negative top-left corner at 0, so "out of range" is a corner off the page.
            (word + ("quad", "x1"), bad_values("number") + [("out of range", 50000)]),
            (word + ("quad", "y3"), bad_values("number") + [("out of range", -5000)]),
        ]
    return spec


@pytest.fixture
def cord_root(shared_data, tmp_path) -> Path:
    root = tmp_path / "cord"
    (root / "json").mkdir(parents=True)
    for stem in CORD_FILES:
        shutil.copy(shared_data / "cord" / "json" / f"{stem}.json", root / "json" / f"{stem}.json")
    return root


def test_cord_every_corruption(cord_root, capsys, caplog):
    total = Counter()
    n = 0
    for position, stem in enumerate(CORD_FILES):
        target = cord_root / "json" / f"{stem}.json"
        data = json.loads(target.read_text())
        cases = json_cases(data, cord_spec(data, position), 3, 2, target.name, f"cord:{stem}")
        cases += file_cases(data, 3, 2, target.name, f"cord:{stem}")
        total += run_all("cord", cord_root, target, cases, capsys, caplog)
        n += len(cases)
    assert sum(total.values()) == n >= 150


def test_all_corruptions_together_in_one_skip_run(funsd_root, cord_root, tmp_path, capsys, caplog):
    """As a user meets them: every broken FUNSD and CORD file of the cases above in one folder with the
    good ones; one skip run lists each broken file exactly once and uses every good one."""
    caplog.set_level(logging.INFO)
    for task, root, folder, files, spec, image in (
        ("funsd", funsd_root, funsd_root / "training_data" / "annotations", FUNSD_FILES, funsd_spec,
         lambda stem: funsd_root / "training_data" / "images" / f"{stem}.png"),
        ("cord", cord_root, cord_root / "json", CORD_FILES, cord_spec, None),
    ):
        broken = []
        for position, stem in enumerate(files):
            data = json.loads((folder / f"{stem}.json").read_text())
            cases = json_cases(data, spec(data, position), 0, 0, "", "") + file_cases(data, 0, 0, "", "")
            for n, case in enumerate(cases):
                name = f"{stem}-bad{n:03d}"
                (folder / f"{name}.json").write_bytes(case.content)
                if image is not None:
                    _link(image(stem).resolve(), image(name))
                broken.append(name)
        skipped = tmp_path / f"{task}.jsonl"
        caplog.clear()
        assert main(["inspect", task, "--data", str(root), "--json", "--check", "--on-bad-document", "skip",
                     "--skipped", str(skipped)]) == 0
        report = json.loads(capsys.readouterr().out)
        records = [json.loads(line) for line in skipped.read_text(encoding="utf-8").splitlines()]
        assert sorted(r["id"] for r in records) == sorted(broken)
        assert sum(report["splits"].values()) == len(files)
        given = len(files) + len(broken)
        assert f"documents: {given} given = {len(files)} used" in caplog.text
        assert f"+ {len(broken)} skipped" in caplog.text


# ----------------------------------------------------------------------------------------- RVL-CDIP
RVL_LINES = ["images/p0.tif 15", "images/p1.tif 3", "images/p2.tif 0", "images/p3.tif 7"]


@pytest.fixture
def rvl_root(shared_data, tmp_path) -> Path:
    """A label file of four lines over copies of the real page (one OCR, cached by content)."""
    root = tmp_path / "rvl"
    real = shared_data / "rvl_cdip" / "images" / "80035521.tif"
    for i in range(4):
        _link(real, root / "images" / f"p{i}.tif")
    (root / "images" / "truncated.tif").write_bytes(real.read_bytes()[:200])
    (root / "images" / "empty.tif").write_bytes(b"")
    (root / "labels").mkdir()
    (root / "labels" / "train.txt").write_text("\n".join(RVL_LINES) + "\n")
    return root


def test_rvl_cdip_every_bad_label_line(rvl_root, capsys, caplog):
    """Each bad line is one skipped entry (file, line number, reason); the good lines are used."""
    target = rvl_root / "labels" / "train.txt"
    line_cases = {
        "wrong type": [b"images/p1.tif x", b"images/p1.tif 1.5", b"images/p1.tif [3]"],
        "missing": [b"images/p1.tif", b"3"],
        "out of range": [b"images/p1.tif 16", b"images/p1.tif -1", b"images/nothere.tif 3"],
        "non-UTF-8": [b"images/p\xe9\xff1.tif 3"],
    }
    cases = []
    for kind, lines in line_cases.items():
        for line in lines:
            content = b"\n".join([RVL_LINES[0].encode(), line, *(x.encode() for x in RVL_LINES[2:])]) + b"\n"
            cases.append(Case(f"rvl line 2 {kind} {line!r}", kind, content, "line 2", 4, 3, "train.txt"))
    for name in ("truncated.tif", "empty.tif"):  # a good line naming a broken page: the page is named
        content = "\n".join([RVL_LINES[0], f"images/{name} 3", *RVL_LINES[2:]]).encode() + b"\n"
        cases.append(Case(f"rvl corrupt image {name}", "corrupt image", content, None, 4, 3, name))
    kinds = run_all("rvl-cdip", rvl_root, target, cases, capsys, caplog)
    assert sum(kinds.values()) == len(cases) == 11


# ------------------------------------------------------------------------------------------- DocVQA
@pytest.fixture
def docvqa_root(shared_data, tmp_path) -> Path:
    """train_v1.0.json (3 questions) and val_v1.0.json (2) about the real page, from the real entry."""
    root = tmp_path / "docvqa"
    real = json.loads((shared_data / "docvqa" / "val_v1.0_sample.json").read_text())
    _link(shared_data / "docvqa" / "documents", root / "documents")
    for split, ids in (("train", (1, 2, 3)), ("val", (4, 5))):
        record = dict(real, dataset_split=split, data=[dict(real["data"][0], questionId=real["data"][0]["questionId"]
                                                            * 10 + i) for i in ids])
        (root / f"{split}_v1.0.json").write_text(json.dumps(record))
    return root


def test_docvqa_every_corruption(docvqa_root, capsys, caplog):
    target = docvqa_root / "train_v1.0.json"
    data = json.loads(target.read_text())
    entry = ("data", 1)
    question_level = [
        (entry, bad_values("object", element=True)),
        (entry + ("questionId",), bad_values("text")),
        (entry + ("question",), bad_values("string") + [("empty", "")]),
        (entry + ("image",), bad_values("string") + [("empty", ""), ("out of range", "documents/nothere.png")]),
        (entry + ("answers",), bad_values("list", required=False)),
        (entry + ("answers", 0), bad_values("text", element=True)),
    ]
    # A question is the unit: 5 given, 4 used. A file that cannot be read at all is one unit: 1 + 2 given.
    cases = json_cases(data, question_level, 5, 4, target.name, "docvqa")
    cases += json_cases(data, [(("data",), bad_values("list"))], 3, 2, target.name, "docvqa")
    cases += file_cases(data, 3, 2, target.name, "docvqa")
    kinds = run_all("docvqa", docvqa_root, target, cases, capsys, caplog)
    assert sum(kinds.values()) == len(cases) >= 30


def test_docvqa_official_ocr_file_corruptions(tmp_path, capsys, caplog):
    """A broken official OCR file (Microsoft Read format): every question on that page is the unit
    skipped, each listed; the demo's OCR files stand in (the real sample ships none)."""
    from aetnet.data.demo import ensure_demo

    root = tmp_path / "docvqa"
    shutil.copytree(ensure_demo("docvqa"), root)
    questions = [e for name in ("train", "val")
                 for e in json.loads((root / f"{name}_v1.0.json").read_text())["data"]]
    page = questions[0]["image"]
    on_page = sum(1 for e in questions if e["image"] == page)
    target = root / "ocr_results" / f"{Path(page).stem}.json"
    data = json.loads(target.read_text())
    word = ("recognitionResults", 0, "lines", 0, "words", 0)
    poly = [("wrong type", v) for v in ("x", {}, [1, 2, 3], [1] * 7, ["a"] * 8)]
    poly += [("null", None), ("missing", MISSING)]
    spec = [
        (("recognitionResults",), bad_values("list")),
        (("recognitionResults", 0), bad_values("object", element=True)),
        (("recognitionResults", 0, "width"), bad_values("number", required=False)),
        (("recognitionResults", 0, "lines", 0), bad_values("object", element=True)),
        (word, bad_values("object", element=True)),
        (word + ("text",), bad_values("text")),
        (word + ("boundingBox",), poly),
    ]
    n = len(questions)
    cases = json_cases(data, spec, n, n - on_page, target.name, "docvqa-ocr", skipped=on_page)
    cases += file_cases(data, n, n - on_page, target.name, "docvqa-ocr", skipped=on_page)
    kinds = run_all("docvqa", root, target, cases, capsys, caplog)
    assert sum(kinds.values()) == len(cases) >= 30 and on_page >= 1


# --------------------------------------------------------------------------- Hugging Face save_to_disk
def _funsd_rows(shared_data: Path) -> list[dict]:
    """Rows of the nielsr/funsd-layoutlmv3 schema built from three real FUNSD annotations."""
    from PIL import Image

    from aetnet.tasks.funsd import parse_funsd_annotation

    src = shared_data / "funsd" / "dataset" / "training_data"
    rows = []
    for stem in FUNSD_FILES:
        doc = parse_funsd_annotation(src / "annotations" / f"{stem}.json", src / "images" / f"{stem}.png")
        width, height = Image.open(doc.image_path).size
        boxes = [[int(1000 * b[0] / width), int(1000 * b[1] / height), int(1000 * b[2] / width),
                  int(1000 * b[3] / height)] for b in doc.boxes]
        names = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
        rows.append({"id": stem, "tokens": doc.words, "bboxes": boxes, "ner_tags": [names.index(x) for x in doc.labels],
                     "image": {"bytes": Path(doc.image_path).read_bytes(), "path": None}})
    return rows


def _save(rows: list[dict], features, folder: Path) -> None:
    import datasets

    if folder.exists():
        shutil.rmtree(folder)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=features)}).save_to_disk(str(folder))


def _hf_cases(task: str, rows: list[dict], corruptions: dict, features, tmp: Path, capsys, caplog) -> int:
    """Each corruption of row 1 in a save_to_disk folder: the row named, skipped alone in skip mode."""
    caplog.set_level(logging.INFO)
    problems = []
    for n, (name, (field, change)) in enumerate(corruptions.items()):
        bad = [dict(r) for r in rows]
        change(bad[1])
        folder = tmp / f"hf-{n}"  # a new folder each time: opened datasets are cached by path in-process
        _save(bad, features, folder)
        case = Case(f"{task} hf row 1 {name}", name, b"", field, len(rows), len(rows) - 1, "[train][1]")
        problems += run_case(task, folder, case, tmp, capsys, caplog)
    assert not problems, "\n".join(problems)
    return len(corruptions)


def test_funsd_hugging_face_rows(shared_data, tmp_path, capsys, caplog):
    """Issue 11 item 3: skip mode applies to HF rows (a row with more words than boxes is skipped)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")),
        "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
        "ner_tags": datasets.Sequence(datasets.Value("int64")), "image": datasets.Image()})

    def put(key, value):
        return lambda row: row.__setitem__(key, value(row))

    corruptions = {
        "more words than boxes": ("boxes", put("tokens", lambda r: r["tokens"] + ["extra"])),
        "fewer tags than words": ("labels", put("ner_tags", lambda r: r["ner_tags"][:-1])),
        "tag out of range": ("ner_tags[0]", put("ner_tags", lambda r: [99] + r["ner_tags"][1:])),
        "negative tag": ("ner_tags[0]", put("ner_tags", lambda r: [-1] + r["ner_tags"][1:])),
        "null token": ("tokens[0]", put("tokens", lambda r: [None] + r["tokens"][1:])),
        "null tokens": ("tokens", put("tokens", lambda r: None)),
        "null box": ("bboxes[0]", put("bboxes", lambda r: [None] + r["bboxes"][1:])),
        "box of 3 numbers": ("bboxes[0]", put("bboxes", lambda r: [[1, 2, 3]] + r["bboxes"][1:])),
        "box out of range": (None, put("bboxes", lambda r: [[0, 0, 5000, 10]] + r["bboxes"][1:])),
        "null image": ("image", put("image", lambda r: None)),
        "corrupt image": ("image", put("image", lambda r: {"bytes": b"not an image", "path": None})),
    }
    assert _hf_cases("funsd", _funsd_rows(shared_data), corruptions, features, tmp_path, capsys, caplog) == 11


def test_cord_hugging_face_rows(shared_data, tmp_path, capsys, caplog):
    import datasets

    rows = [{"ground_truth": (shared_data / "cord" / "json" / f"{stem}.json").read_text(), "image": None}
            for stem in CORD_FILES]
    features = datasets.Features({"ground_truth": datasets.Value("string"), "image": datasets.Image()})

    def gt(change):
        def apply(row):
            data = json.loads(row["ground_truth"])
            change(data)
            row["ground_truth"] = json.dumps(data)
        return apply

    corruptions = {
        "ground truth not JSON": ("ground_truth", lambda r: r.__setitem__("ground_truth", r["ground_truth"][:50])),
        "null ground truth": ("ground_truth", lambda r: r.__setitem__("ground_truth", None)),
        "line not an object": ("valid_line[0]", gt(lambda d: d["valid_line"].__setitem__(0, "menu"))),
        "quad coordinate not a number": ("valid_line[0].words[0].quad.x1",
                                         gt(lambda d: d["valid_line"][0]["words"][0]["quad"].__setitem__("x1", "a"))),
        "corrupt image": ("image", lambda r: r.__setitem__("image", {"bytes": b"not an image", "path": None})),
    }
    assert _hf_cases("cord", rows, corruptions, features, tmp_path, capsys, caplog) == 5


def test_rvl_cdip_hugging_face_rows(shared_data, tmp_path, capsys, caplog):
    import datasets

    page = (shared_data / "rvl_cdip" / "images" / "80035521.tif").read_bytes()
    rows = [{"image": {"bytes": page, "path": None}, "label": label} for label in (15, 3, 0)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    corruptions = {
        "class out of range": ("label", lambda r: r.__setitem__("label", 16)),
        "negative class": ("label", lambda r: r.__setitem__("label", -1)),
        "corrupt image": (None, lambda r: r.__setitem__("image", {"bytes": b"II*\x00 not a page", "path": None})),
    }
    assert _hf_cases("rvl-cdip", rows, corruptions, features, tmp_path, capsys, caplog) == 3


def test_skipped_list_is_the_same_for_any_number_of_ocr_workers(rvl_root, capsys):
    """Bad pages met in OCR worker processes are reported as in one process: same skipped.jsonl."""
    lines = [RVL_LINES[0], "images/truncated.tif 3", RVL_LINES[1], "images/p2.tif 99", "images/empty.tif 4",
             *RVL_LINES[2:]]
    (rvl_root / "labels" / "train.txt").write_text("\n".join(lines) + "\n")
    listed = {}
    for workers in (1, 2):
        skipped = rvl_root.parent / f"skipped-{workers}.jsonl"
        code = main(["inspect", "rvl-cdip", "--data", str(rvl_root), "--json", "--check", "--on-bad-document", "skip",
                     "--skipped", str(skipped), f"data.ocr_workers={workers}"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["documents"]["documents_given"] == 7 and sum(report["splits"].values()) == 4
        listed[workers] = skipped.read_text(encoding="utf-8")
    assert listed[1] == listed[2]
    records = [json.loads(line) for line in listed[1].splitlines()]
    assert len(records) == 3 and "line 4" in records[0]["reason"]  # label lines are listed before any OCR
    assert [r["id"] for r in records[1:]] == ["images/truncated.tif", "images/empty.tif"]


def test_docvqa_broken_page_same_for_any_number_of_ocr_workers(docvqa_root, capsys):
    """A DocVQA page that Tesseract cannot read, met while the pool fills the OCR cache: each of its
    questions is listed as with one process, the other questions are used."""
    real = docvqa_root / "documents" / "ffhx0227_1.png"
    broken_dir = docvqa_root / "pages"
    broken_dir.mkdir()
    (broken_dir / "broken.png").write_bytes(real.read_bytes()[:300])
    train = docvqa_root / "train_v1.0.json"
    record = json.loads(train.read_text())
    record["data"][1]["image"] = record["data"][2]["image"] = "pages/broken.png"
    train.write_text(json.dumps(record))
    listed = {}
    for workers in (1, 2):
        skipped = docvqa_root.parent / f"skipped-{workers}.jsonl"
        code = main(["inspect", "docvqa", "--data", str(docvqa_root), "--json", "--check", "--on-bad-document",
                     "skip", "--skipped", str(skipped), f"data.ocr_workers={workers}"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["documents"]["documents_given"] == 5 and sum(report["splits"].values()) == 3
        listed[workers] = skipped.read_text(encoding="utf-8")
    assert listed[1] == listed[2]
    records = [json.loads(line) for line in listed[1].splitlines()]
    assert [r["id"] for r in records] == [str(e["questionId"]) for e in record["data"][1:3]]
    assert all("broken.png" in r["reason"] for r in records)


# ------------------------------------------------------------------------------------ real processes
def test_real_cli_processes(funsd_root, cord_root, tmp_path):
    """The command as a user runs it (issue 11 items 1 and 2): exit 2, one line, no traceback; skip mode
    exits 0 with the document listed and the others counted."""
    ann = funsd_root / "training_data" / "annotations" / f"{FUNSD_FILES[1]}.json"
    data = json.loads(ann.read_text())
    data["form"][0]["words"][0]["box"][1] = "12a"  # issue 11 item 1
    ann.write_text(json.dumps(data))
    receipt = cord_root / "json" / f"{CORD_FILES[0]}.json"
    data = json.loads(receipt.read_text())
    data["valid_line"][1] = "menu.nm"  # issue 11 item 2
    receipt.write_text(json.dumps(data))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cli = [sys.executable, "-m", "aetnet"]
    # Error mode, reader-only (--check): FUNSD with a box coordinate that is not a number.
    proc = subprocess.run([*cli, "inspect", "funsd", "--data", str(funsd_root), "--check"], capture_output=True,
                          text=True, env=env, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aetnet: error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and ann.name in errors[0] and "'form[0].words[0].box[1]'" in errors[0], proc.stderr
    # Skip mode with the full token statistics: CORD with a valid_line entry that is not an object.
    skipped = tmp_path / "cord.jsonl"
    proc = subprocess.run([*cli, "inspect", "cord", "--data", str(cord_root), "--json", "--on-bad-document", "skip",
                           "--skipped", str(skipped)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (record,) = [json.loads(line) for line in skipped.read_text().splitlines()]
    assert receipt.name in record["source"] and "valid_line[1]" in record["reason"]
    assert sum(split["documents"] for name, split in json.loads(proc.stdout).items() if name != "base") == 2
    assert re.search(r"documents: 3 given = 2 used \(.*\) \+ 1 skipped", proc.stderr), proc.stderr
