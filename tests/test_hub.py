"""The Hugging Face Hub: model cards that parse with ``ModelCard.load``; push an export to a local Hub
stand-in (tests/hub_standin.py), pull it into an empty cache and predict the same; offline from the
cache; one clear error for a missing token, a missing repository, a network failure and a model that
is neither a folder nor in the cache.

The Hub is only reached in subprocesses whose ``HF_ENDPOINT`` points at the stand-in and whose
``HF_HOME`` is a fresh folder (``huggingface_hub`` reads both when it is imported; the test session
itself runs with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from aetnet.cli.main import main
from aetnet.export.card import card_licence, licence_file, model_card

_spec = importlib.util.spec_from_file_location("hub_standin", Path(__file__).with_name("hub_standin.py"))
hub_standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hub_standin)


@pytest.fixture()
def hub():
    server = hub_standin.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exported(funsd_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub-export") / "funsd"
    assert main(["export", str(funsd_run), "--output", str(out)]) == 0
    return out


def _env(tmp_path: Path, hub=None, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1")
    if hub is not None:
        env.update(HF_ENDPOINT=hub.url, HF_TOKEN=hub.token)
    env.update(extra)
    return env


def _aetnet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aetnet", *args], env=env, capture_output=True, text=True,
                          timeout=600)


#: A fresh process that runs the ``aetnet`` command's entry for each argument list of ``sys.argv[1]`` (JSON) and
#: prints one JSON line per run: exit status, stdout, stderr, and whether PyTorch had been imported by then.
MAIN_CALLS = ("import contextlib, io, json, sys\n"
              "from aetnet.cli.main import main\n"
              "for args in json.loads(sys.argv[1]):\n"
              "    out, err = io.StringIO(), io.StringIO()\n"
              "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
              "        code = main(args)\n"
              "    print(json.dumps([code, out.getvalue(), err.getvalue(), 'torch' in sys.modules]))\n")


def _main_calls(env: dict[str, str], *calls: list[str]) -> list[tuple[int, str, str, bool]]:
    """``aetnet ARGS`` for each of ``calls``, one after the other in one fresh process with ``env`` (the Hub
    settings are read when ``huggingface_hub`` is imported): ``(status, stdout, stderr, torch imported)`` each."""
    done = subprocess.run([sys.executable, "-c", MAIN_CALLS, json.dumps(calls)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(json.loads(line)) for line in done.stdout.strip().splitlines()[-len(calls):]]


def _python(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- model card


def test_exported_card_parses_and_holds_the_run_metrics(funsd_run, exported):
    card = ModelCard.load(exported / "README.md", ignore_metadata_errors=False)
    data = card.data
    metrics = json.loads((funsd_run / "metrics.json").read_text())
    assert data.library_name == "aetnet" and data.pipeline_tag == "token-classification"
    assert data.license == "apache-2.0"  # the tiny base is aetnet's own random model, the demo data synthetic
    assert {"layoutlmv3", "document-ai", "funsd", "full"} <= set(data.tags)
    assert set(data.metrics) == {"f1", "precision", "recall"}
    got = {(r.metric_type, r.dataset_split): r.metric_value for r in data.eval_results}
    assert got == {("f1", metrics["eval_split"]): metrics["f1"], ("precision", metrics["eval_split"]):
                   metrics["precision"], ("recall", metrics["eval_split"]): metrics["recall"]}
    assert data.datasets is None and "synthetic" in card.text  # the demo claims no benchmark dataset
    assert hub_standin.validate_card(str(card)) == []
    assert "| f1 |" in card.text and "## Licences" in card.text


def test_card_front_matter_for_a_layoutlmv3_base_on_benchmark_data():
    meta = {"task": "funsd", "kind": "token", "strategy": "aet", "base": "microsoft/layoutlmv3-base",
            "labels": ["O", "B-QUESTION"]}
    text = model_card(meta, {"f1": 0.8125, "precision": 0.75, "recall": 0.875, "eval_split": "test",
                             "train_loss": 1.5})
    card = ModelCard(text, ignore_metadata_errors=False)
    data = card.data
    assert data.base_model == "microsoft/layoutlmv3-base"
    assert data.datasets == ["nielsr/funsd-layoutlmv3"]
    # FUNSD's own non-commercial research terms beside the base's CC BY-NC-SA 4.0: no single id covers both
    assert (data.license, data.license_name) == ("other", "cc-by-nc-sa-4.0-and-funsd-terms")
    assert data.license_link == "LICENSE.md"
    terms = licence_file(meta)
    assert "CC BY-NC-SA 4.0" in terms and "FUNSD" in terms and "non-commercial" in terms
    assert {(r.metric_type, r.metric_value) for r in data.eval_results} == {
        ("f1", 0.8125), ("precision", 0.75), ("recall", 0.875)}
    assert {r.task_type for r in data.eval_results} == {"token-classification"}
    assert {"layoutlmv3", "document-ai", "funsd", "aet"} <= set(data.tags)
    assert text.startswith("---\n") and "model-index:" in text
    assert hub_standin.validate_card(text) == []


@pytest.mark.parametrize(("base", "task", "demo", "expected"), [
    ("microsoft/layoutlmv3-base", "cord", False, {"license": "cc-by-nc-sa-4.0"}),  # CC BY data: the base governs
    ("microsoft/layoutlmv3-large", "token", False, {"license": "cc-by-nc-sa-4.0"}),  # your own pages
    ("some/layoutlmv3-derivative", "classify", False, {"license": "cc-by-nc-sa-4.0"}),
    ("microsoft/layoutlmv3-base", "rvl-cdip", False, {"license": "other",
                                                       "license_name": "cc-by-nc-sa-4.0-and-rvl-cdip-terms"}),
    ("microsoft/layoutlmv3-base", "docvqa", False, {"license": "other",
                                                     "license_name": "cc-by-nc-sa-4.0-and-docvqa-terms"}),
    ("tiny", "funsd", True, {"license": "apache-2.0"}),
    ("tiny", "funsd", False, {"license": "other", "license_name": "apache-2.0-and-funsd-terms"}),
])
def test_card_licence_rule(base, task, demo, expected):
    assert card_licence(base, task, demo) == expected


def test_card_for_qa_and_classification_kinds():
    qa = ModelCard(model_card({"task": "docvqa", "kind": "qa", "strategy": "lora", "base": "b/c"},
                              {"anls": 0.5, "exact_match": 0.25}), ignore_metadata_errors=False).data
    assert qa.pipeline_tag == "document-question-answering"
    assert {(r.metric_type, r.metric_value) for r in qa.eval_results} == {("anls", 0.5), ("exact_match", 0.25)}
    cls = ModelCard(model_card({"task": "rvl-cdip", "kind": "sequence", "strategy": "full", "base": "b/c"},
                               {"accuracy": 0.9, "macro_f1": 0.85}), ignore_metadata_errors=False).data
    assert cls.pipeline_tag == "text-classification" and cls.datasets == ["aharley/rvl_cdip"]
    assert {(r.metric_name, r.metric_value) for r in cls.eval_results} == {("Accuracy", 0.9), ("Macro F1", 0.85)}


def test_standin_refuses_a_card_the_hub_would_refuse():
    """The stand-in's validation can fail (so the push test's passing validation means something)."""
    assert hub_standin.validate_card("---\nlicense: cc-by-nc-sa\n---\ntext") != []
    assert hub_standin.validate_card("---\nlicense: other\n---\ntext") != []
    assert hub_standin.validate_card("---\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\n") != []


# -- push and pull


def test_push_pull_predict_round_trip_and_offline(exported, funsd_run, shared_data, hub, tmp_path, capsys):
    page = sorted((shared_data / "funsd").rglob("*.png"))[0]
    capsys.readouterr()  # the local folder's predictions, in this process (its Hub access is off anyway)
    assert main(["predict", str(exported), str(page), "--ocr-workers", "1"]) == 0
    want = capsys.readouterr().out
    import torch

    # One process pushes, then predicts from its Hub cache, empty until then (a push downloads nothing); it
    # uses this process's thread count (the same arithmetic).
    clean = _env(tmp_path / "clean-cache", hub, OMP_NUM_THREADS=str(torch.get_num_threads()))
    done, got = _main_calls(clean, ["export", str(funsd_run), "--push-to-hub", "alice/funsd-tiny", "--private"],
                            ["predict", "alice/funsd-tiny", str(page), "--ocr-workers", "1"])
    assert done[0] == 0, done[2]
    assert "pushed to alice/funsd-tiny" in done[1]
    assert hub.repos["alice/funsd-tiny"].private
    pushed = hub.repos["alice/funsd-tiny"].commits[hub.repos["alice/funsd-tiny"].refs["main"]]
    assert {"README.md", "aetnet.json", "model.safetensors", "config.json", "tokenizer.json"} <= set(pushed)
    assert pushed["model.safetensors"] == (exported / "model.safetensors").read_bytes()
    assert hub.requests.get("validate") == 1  # huggingface_hub validated the card before committing

    assert got[0] == 0, got[2]
    assert hub.requests["download"] >= len(pushed)
    records_want, records_got = json.loads(want), json.loads(got[1])
    assert records_got == records_want and records_want[str(page)][0]["entities"] is not None

    hub.stop()  # offline from the cache: no Hub at all
    offline, served = _predict_then_serve(dict(clean, HF_HUB_OFFLINE="1"), "alice/funsd-tiny", page)
    assert offline[0] == 0
    assert json.loads(offline[1]) == records_want
    want = records_want[str(page)]
    assert [[w["label"] for w in r["words"]] for r in served] == [[w["label"] for w in r["words"]] for r in want]
    assert [r["entities"] for r in served] == [r["entities"] for r in want]
    uncached = _aetnet(dict(_env(tmp_path / "empty"), HF_HUB_OFFLINE="1"), "predict", "alice/funsd-tiny",
                       str(page))
    assert uncached.returncode == 2
    assert "not in the Hugging Face cache" in uncached.stderr and "Traceback" not in uncached.stderr


#: A fresh process that runs ``aetnet predict MODEL PAGE``, then ``aetnet serve MODEL --port PORT`` (its entry,
#: in the main thread) while a thread POSTs PAGE once to the served port; prints ``PREDICTED [status,
#: stdout]`` and ``SERVED records``, then ends the process.
PREDICT_THEN_SERVE = """
import contextlib, io, json, os, sys, threading, time, urllib.request
from aetnet.cli.main import main
model, page, port = sys.argv[1:4]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["predict", model, page, "--ocr-workers", "1"])
print("PREDICTED", json.dumps([code, out.getvalue()]), flush=True)

def client():
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer within 240 s"
                time.sleep(0.5)
        boundary = "hub-test-boundary"
        name = os.path.basename(page)
        body = (f'--{boundary}\\r\\nContent-Disposition: form-data; name="file"; filename="{name}"\\r\\n'
                "Content-Type: image/png\\r\\n\\r\\n").encode() + open(page, "rb").read() + \\
            f"\\r\\n--{boundary}--\\r\\n".encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            print("SERVED", json.dumps(json.loads(resp.read())), flush=True)
        os._exit(0)
    except BaseException as exc:
        print("client failed:", repr(exc), file=sys.stderr, flush=True)
        os._exit(1)

threading.Thread(target=client, daemon=True).start()
sys.exit(main(["serve", model, "--port", port]))
"""


def _predict_then_serve(env: dict[str, str], model: str, page: Path) -> tuple[list, list[dict]]:
    """``aetnet predict MODEL PAGE`` and then ``aetnet serve MODEL`` on a free port with one POST of ``page``,
    both in one fresh process with ``env``: ``([status, stdout] of predict, the served records)``."""
    done = subprocess.run([sys.executable, "-c", PREDICT_THEN_SERVE, model, str(page), str(_free_port())], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines()
             if line.startswith(("PREDICTED ", "SERVED "))}
    return json.loads(lines["PREDICTED"]), json.loads(lines["SERVED"])


@pytest.mark.parametrize("recorded", ["real data", "not recorded"])
def test_export_of_a_run_on_real_data_writes_the_licence_file(funsd_run, tmp_path, recorded):
    """A run that did not train on the demo gets the FUNSD terms and LICENSE.md, also when its config names no
    data path (``aetnet finetune funsd`` without --data downloads the official FUNSD) and when its metrics.json
    predates the ``demo_data`` record: only a run recorded as a demo run is one."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(funsd_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    assert json.loads((run / "metrics.json").read_text())["demo_data"] is True  # the fixture trained on the demo
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] is None
    metrics = json.loads((run / "metrics.json").read_text())
    if recorded == "real data":
        metrics["demo_data"] = False
    else:
        del metrics["demo_data"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["export", str(run), "--output", str(tmp_path / "out")]) == 0
    data = ModelCard.load(tmp_path / "out" / "README.md", ignore_metadata_errors=False).data
    assert (data.license, data.license_name, data.license_link) == ("other", "apache-2.0-and-funsd-terms",
                                                                    "LICENSE.md")
    assert data.datasets == ["nielsr/funsd-layoutlmv3"]
    assert "FUNSD" in (tmp_path / "out" / "LICENSE.md").read_text()


def test_push_to_a_branch_and_load_that_revision(exported, hub, tmp_path):
    # one process (each start imports torch) pushes to the branch, then loads from its Hub cache (empty until
    # then: a push downloads nothing): aetnet.load, then `aetnet evaluate` through its CLI entry, each result on
    # its own line
    pull = ("import aetnet, contextlib, io, json, sys; from aetnet.cli.main import main\n"
            "from aetnet.inference.hub import push_folder\n"
            f"print(push_folder({str(exported)!r}, 'alice/rev', revision='dev'))\n"
            "repo = __import__('pathlib').Path(sys.argv[1])\n"
            "print(json.dumps(sorted(p.name for p in repo.iterdir()) if repo.exists() else []))\n"
            "m = aetnet.load('alice/rev', revision='dev'); print(json.dumps(m.meta['task']))\n"
            "for args in (['--revision', 'dev', '--demo', 'data.max_eval_documents=1'], ['--demo'],"
            " ['--revision', 'v9', '--demo']):\n"
            "    out, err = io.StringIO(), io.StringIO()\n"
            "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
            "        code = main(['evaluate', 'alice/rev', *args])\n"
            "    print(json.dumps([code, out.getvalue(), err.getvalue()]))\n")
    env = _env(tmp_path / "pull", hub)
    got = subprocess.run([sys.executable, "-c", pull, str(Path(env["HF_HOME"]) / "hub")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    repo = hub.repos["alice/rev"]
    assert "aetnet.json" in repo.commits[repo.refs["dev"]] and "aetnet.json" not in repo.commits[repo.refs["main"]]
    lines = got.stdout.strip().splitlines()
    assert not [name for name in json.loads(lines[-5]) if "alice--rev" in name], "the push filled the Hub cache"
    assert json.loads(lines[-4]) == "funsd"
    evaluated, main_only, missing = (json.loads(line) for line in lines[-3:])
    assert evaluated[0] == 0, evaluated[2]
    assert "f1" in json.loads(evaluated[1])
    assert main_only[0] == 2 and "no aetnet.json" in main_only[2]
    assert missing[0] == 2 and "no revision 'v9'" in missing[2]


def test_push_errors_are_one_sentence(exported, hub, tmp_path):
    def push(env, repo="alice/x"):
        return _python(env, f"from aetnet.inference.hub import push_folder; push_folder({str(exported)!r}, {repo!r})")

    def message(done):
        assert done.returncode != 0
        assert "AetnetError" in done.stderr
        return done.stderr.strip().splitlines()[-1]

    no_token = _env(tmp_path, None, HF_ENDPOINT=hub.url)
    assert "no Hugging Face token found" in message(push(no_token))
    assert "does not exist" in message(push(_env(tmp_path, hub), repo="bob/x"))  # not a namespace we may write to
    assert "refused the token" in message(push(_env(tmp_path, hub, HF_TOKEN="hf_wrong")))
    dead = _env(tmp_path, hub, HF_ENDPOINT=f"http://127.0.0.1:{_free_port()}")
    assert "cannot reach the Hub" in message(push(dead))
    assert "HF_HUB_OFFLINE is set" in message(push(_env(tmp_path, hub, HF_HUB_OFFLINE="1")))
    assert "OWNER/NAME" in message(push(_env(tmp_path, hub), repo="no-owner"))
    assert hub.repos == {}


def test_pull_errors(hub, tmp_path):
    """Each a one-line error (status 2), given before PyTorch is imported: predict, evaluate and serve resolve a
    Hub id first (one process per Hub setting, as ``huggingface_hub`` reads them at import)."""
    env = _env(tmp_path, hub)
    unknown, local, evaluate, serve, pairs = _main_calls(
        env, ["predict", "alice/nothing", "page.png"], ["predict", str(tmp_path), "page.png", "--revision", "dev"],
        ["evaluate", "alice/nothing", "--demo"], ["serve", "alice/nothing", "--port", str(_free_port())],
        ["predict", "--entities", str(tmp_path), "--links", "alice/nolinks", "p.png"])
    assert unknown[0] == 2 and "no model repository alice/nothing" in unknown[2]
    assert local[0] == 2 and "--revision picks a branch of a Hub repository" in local[2]
    for done in (evaluate, serve):
        assert done[0] == 2 and "no model repository alice/nothing" in done[2]
    assert pairs[0] == 2 and "no model repository alice/nolinks" in pairs[2]
    (dead,) = _main_calls(_env(tmp_path, hub, HF_ENDPOINT=f"http://127.0.0.1:{_free_port()}"),
                          ["predict", "alice/x", "p.png"])
    assert dead[0] == 2
    assert "cannot reach the Hub" in dead[2] or "not in the Hugging Face cache" in dead[2]
    for done in (unknown, local, evaluate, serve, pairs, dead):
        assert done[2].startswith("aetnet: error: ") and done[2].count("\n") == 1, done[2]
        assert done[3] is False, "PyTorch was imported before the Hub id was checked"


def test_compare_pushes_the_best_model_with_its_table(funsd_run, hub, tmp_path):
    """Best strategy by mean, then its best seed: here ``full`` (mean 0.475) over ``head`` (0.45),
    although head's seed 0 (0.9) is the best single run."""
    import pandas as pd

    from aetnet.compare.hub import best_run

    out = tmp_path / "comparison"
    out.mkdir()
    pd.DataFrame({"strategy": ["full", "full", "head", "head"], "seed": [0, 1, 0, 1],
                  "f1": [0.45, 0.5, 0.9, 0.0],
                  "run_dir": [str(tmp_path / "nope"), str(funsd_run), str(tmp_path / "no"), str(tmp_path / "n")]}
                 ).to_csv(out / "runs.csv", index=False)
    pd.DataFrame({"strategy": ["full", "head"], "f1_mean": [0.475, 0.45]}).to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text("# funsd: strategy comparison\n\n| strategy | f1 |\n|---|---|\n| full | 0.475 |\n")
    (out / "results.png").write_bytes(b"\x89PNG fake")
    assert best_run(out, "f1") == ("full", funsd_run)
    code = f"from aetnet.compare.hub import push_comparison; push_comparison({str(out)!r}, 'funsd', 'alice/cmp')"
    done = _python(_env(tmp_path, hub), code)
    assert done.returncode == 0, done.stderr
    repo = hub.repos["alice/cmp"]
    files = repo.commits[repo.refs["main"]]
    assert {"comparison/results.md", "comparison/results.csv", "comparison/results.png", "aetnet.json"} <= set(files)
    assert json.loads(files["aetnet.json"])["exported_from"] == str((funsd_run / "model").resolve())
    card = ModelCard(files["README.md"].decode(), ignore_metadata_errors=False)
    assert "## Strategy comparison" in card.text and "| full | 0.475 |" in card.text
