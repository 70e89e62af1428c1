"""Every ``aetnet`` command shown in a ```bash block of the guides (docs/*.md and README.md) is run here,
or carries a marker saying why it cannot run offline (see docs/contributing.md, "Commands in the guides"):

- ``# needs: real weights`` / ``real data`` / ``a GPU`` / ``network`` / ``several processes``: not run;
- ``# tested: tests/test_x.py``: run by that test file, which must exist and name the command's
  subcommand and each of its ``--flags``.

An unmarked command is run in process (``aetnet.cli.main.main``) in a temporary folder, in the order
of the guides, on offline stand-ins: the placeholder paths and names it shows are replaced through the
one table below (``STAND_INS``), the files it reads are prepared there (``prepare_workspace``), training
is cut to two steps (``SHORT``), and it must exit with 0. Commands of the same shape (subcommand, task
and flags, ignoring ``--output`` and ``key=value`` settings, which tests/test_docs.py validates) run once.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from pathlib import Path

from aetnet.cli.main import main
from tests.test_docs import DOCS, ROOT, aetnet_argv

#: What ``# needs: ...`` may say.
NEEDS = {"real weights", "real data", "a GPU", "network", "several processes"}
MARKER = re.compile(r"\b(needs|tested):\s*(.+?)\s*$")

#: The placeholder words of the guides and their offline stand-ins ({data}: tests/data, the real
#: samples; {fixtures}: tests/fixtures; {workspace}: the temporary folder the commands run in).
#: Any other path a command reads is a file prepare_workspace writes there under the same name.
STAND_INS = {
    "microsoft/layoutlmv3-base": "tiny",                                  # the tiny offline base
    "~/data/FUNSD": "{data}/funsd",                                       # the real FUNSD sample
    "export.json": "{fixtures}/labelstudio_ocr_export.json",              # a Label Studio export
    "~/label-studio/media/upload": "{data}/funsd/dataset/training_data/images",  # its images
    "~/scans": "{workspace}",                                             # where new-scans/ lies
}
#: Appended to the commands that train: two steps on two documents.
SHORT = {"finetune": ["train.max_steps=2", "train.batch_size=2", "data.max_train_documents=2",
                      "data.max_eval_documents=1"]}
SHORT["compare"] = SHORT["finetune"]
#: Subcommands that run until stopped: never run here, they must carry a marker.
LONG_RUNNING = {"serve"}
#: Appended to predict: OCR in process (no worker pool to start for one or two pages).
EXTRA_FLAGS = {"predict": ["--ocr-workers", "1"]}


def marked_commands(text: str) -> list[tuple[str, str | None, str | None]]:
    """The commands of a page's ```bash blocks (continuation lines joined) with their marker:
    ``(command, "needs" | "tested" | None, what)``; the marker is read from the trailing comment."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            comment = re.search(r"\s+#(.*)$", line)
            command = line[:comment.start()] if comment else line
            marker = MARKER.search(comment.group(1)) if comment else None
            found.append((command.strip(), *(marker.groups() if marker else (None, None))))
    return found


def drop_optional(command: str) -> str:
    """The command without its optional parts written ``[--flag X]``."""
    return re.sub(r"\s*\[[^\]]*\]", "", command)


def shape(argv: list[str]) -> tuple:
    """Subcommand words (e.g. ``finetune funsd``, ``formats show pages``) and flags, ignoring --output
    and values."""
    head = argv[:1]
    for word in argv[1:]:  # subcommand words: up to the first flag or path
        if word.startswith("-") or "/" in word or "." in word:
            break
        head.append(word)
    return (*head, *sorted(w for w in argv if w.startswith("--") and w != "--output"))


def stand_in(argv: list[str], places: dict[str, str]) -> list[str]:
    """The command's words with STAND_INS applied and the short-run settings appended; a ``~`` path
    without a stand-in fails (it would read the user's home)."""
    out = []
    for word in argv:
        word = STAND_INS.get(word, word).format(**places)
        if word.startswith("~"):
            raise LookupError(f"no stand-in for {word}: add it to STAND_INS or mark the command")
        out.append(word)
    return out + EXTRA_FLAGS.get(argv[0], []) + SHORT.get(argv[0], [])


def run_guides(pages: dict[str, str], places: dict[str, str]) -> tuple[list[str], list[str]]:
    """Run every unmarked aetnet command of the pages (name -> markdown); returns (run, failures)."""
    ran, failures, seen = [], [], set()
    for page, text in pages.items():
        for command, kind, _ in marked_commands(text):
            if kind is not None:
                continue
            argv = aetnet_argv(drop_optional(command))
            if argv is None or shape(argv) in seen:
                continue
            seen.add(shape(argv))
            start = time.perf_counter()
            try:
                if argv[0] in LONG_RUNNING:
                    raise LookupError(f"`{argv[0]}` runs until stopped: mark it (a test that stops it)")
                code = main(stand_in(argv, places))
            except (SystemExit, LookupError) as exc:
                code = exc.code if isinstance(exc, SystemExit) else str(exc)
            ran.append(f"{page}: {command} ({time.perf_counter() - start:.1f} s)")
            if code != 0:
                failures.append(f"{page}: `{command}` exited with {code}")
    return ran, failures


def prepare_workspace(work: Path, funsd_run: Path, qa_model: Path, funsd_pages, shared_data: Path) -> None:
    """The files and folders the guides' commands read, under the names they show."""
    from PIL import Image

    from aetnet.data.demo import ensure_demo
    from tests.test_relations_e2e import _own_pages

    form = shared_data / "funsd" / "dataset" / "testing_data" / "images" / "82092117.png"
    (work / "runs").mkdir()
    shutil.copytree(funsd_run, work / "runs" / "funsd-full")       # a trained run (the tiny FUNSD run)
    (work / "exports").mkdir()
    (work / "exports" / "docvqa").symlink_to(qa_model)               # an exported DocVQA model
    shutil.copy(form, work / "form.png")                              # a real FUNSD page
    shutil.copy(next((shared_data / "docvqa" / "documents").glob("*.png")), work / "page.png")
    for folder in ("scans", "new-scans"):                             # folders of pages
        (work / folder).mkdir()
        shutil.copy(form, work / folder / "form.png")
    for pdf in ("letter.pdf", "invoice.pdf", "scan.pdf"):             # the FUNSD page as a PDF
        Image.open(form).convert("RGB").save(work / pdf)
    funsd_pages(work / "data")                                       # own pages: train.jsonl, test.jsonl
    (work / "pages").mkdir()                                          # own pages with entity links
    _own_pages(work / "pages", ensure_demo("funsd"))
    assert main(["recipes", "cp", "funsd/full", str(work / "mine.yaml")]) == 0  # as the quickstart says
    recipe = (work / "mine.yaml").read_text(encoding="utf-8")               # ... on the tiny base
    assert "base: microsoft/layoutlmv3-base" in recipe
    (work / "mine.yaml").write_text(recipe.replace("microsoft/layoutlmv3-base", STAND_INS["microsoft/layoutlmv3-base"]))


GUIDES = [(path.name, command, kind, what) for path in DOCS
          for command, kind, what in marked_commands(path.read_text(encoding="utf-8"))]


def test_markers_are_known_and_name_existing_tests():
    for page, command, kind, what in GUIDES:
        if kind == "needs":
            assert what in NEEDS, f"{page}: `{command}`: `# needs: {what}` is not one of {sorted(NEEDS)}"
        elif kind == "tested":
            test = ROOT / what
            assert test.is_file() and test.parent == ROOT / "tests", f"{page}: `{command}`: no test file {what}"
            argv = aetnet_argv(drop_optional(command))
            text = test.read_text(encoding="utf-8")
            assert argv is not None and re.search(rf"\b{argv[0]}\b", text), f"{page}: {what} runs no `{argv[0]}`"
            for flag in (w for w in shlex.split(drop_optional(command)) if w.startswith("--")):
                assert flag in text, f"{page}: `{command}`: {what} never uses {flag}"


def test_every_unmarked_command_in_the_guides_runs(tmp_path, monkeypatch, funsd_run, qa_model, funsd_pages,
                                                   shared_data):
    work = tmp_path / "workspace"
    work.mkdir()
    prepare_workspace(work, funsd_run, qa_model, funsd_pages, shared_data)
    monkeypatch.chdir(work)
    places = {"data": str(shared_data), "fixtures": str(ROOT / "tests" / "fixtures"), "workspace": str(work)}
    ran, failures = run_guides({p.name: p.read_text(encoding="utf-8") for p in DOCS}, places)
    assert not failures, "\n".join(failures)
    print("\n".join(ran))
    assert len(ran) >= 15, ran
    assert (work / "runs" / "demo-funsd" / "model").is_dir()
    assert (work / "exports" / "funsd" / "model.int8.onnx").is_file()
    assert (work / "runs" / "invoices" / "model").is_dir() and (work / "tasks.json").is_file()


def test_a_broken_or_unmarked_command_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    places = {"data": "", "fixtures": "", "workspace": str(tmp_path)}
    page = "```bash\naetnet recipes ls --no-such-flag\naetnet inspect funsd --data ~/data/XFUND\n" \
           "aetnet inspect funsd --data ~/data/XFUND   # needs: real data\naetnet serve exports/funsd --port 8000\n" \
           "aetnet recipes ls   # a comment, no marker\n```\n"
    ran, failures = run_guides({"page.md": page}, places)
    assert len(ran) == 4 and len(failures) == 3, failures
    assert "--no-such-flag" in failures[0] and "XFUND" in failures[1] and "runs until stopped" in failures[2]

