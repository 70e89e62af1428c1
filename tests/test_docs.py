"""The documentation site: ``mkdocs build --strict`` passes (broken links, missing pages and docstrings
that do not match their signatures fail it), the settings page lists every configuration field, the
README stays a short front page, and every ``aetnet`` command shown in a ```bash block of the guides
parses with aetnet's own command-line parser (subcommand, flags, choices) and its ``key=value``
settings exist in the configuration."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aetnet.cli.main import build_parser
from aetnet.config.settings import RunConfig, config_sections, parse_overrides, resolve_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
#: First words of the shell commands the guides show besides aetnet (set-up and other tools).
OTHER_TOOLS = {"make", "pip", ".", "tensorboard", "curl", "tail", "huggingface-cli", "mkdocs", "export"}
AETNET_LAUNCHERS = ("torchrun", "accelerate")


def bash_commands(path: Path) -> list[str]:
    """The commands of a file's ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def aetnet_argv(command: str) -> list[str] | None:
    """The arguments after ``aetnet`` (or ``-m aetnet`` of a launcher), without leading ``VAR=value``
    assignments; optional parts written ``[--flag X]`` are kept as given; ``None``: another tool."""
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words = words[1:]
    if words[0] == "aetnet":
        return words[1:]
    if words[0] in AETNET_LAUNCHERS:
        return words[words.index("aetnet") + 1:]
    assert words[0] in OTHER_TOOLS, f"a command of an unknown tool in the docs: {command}"
    return None


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    settings = (site / "settings" / "index.html").read_text(encoding="utf-8")
    sections = config_sections()  # the shared sections and every registered strategy's (aet, lora, prompt)
    assert {"data", "train", "aet", "lora", "prompt", "relations"} <= set(sections)
    names = [f.name for f in dataclasses.fields(RunConfig) if f.name not in sections and f.name != "sections"]
    names += [f"{section}.{g.name}" for section, cls in sections.items() for g in dataclasses.fields(cls)]
    for name in names:
        assert f"<code>{name}</code>" in settings, f"{name} missing from the settings page"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "resolve_model" in api and "Predictor" in api and "push_folder" in api


def test_readme_is_a_short_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 120
    for page in re.findall(r"\]\((docs/[^)#]+\.md)\)", text):
        assert (ROOT / page).is_file(), page


def test_readme_table_of_bases_matches_the_base_contract():
    """One row per base family of aetnet.bases: its hub ids, languages, licence, strategies and aligners."""
    from aetnet.bases import FAMILIES

    rows = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `") and "--base" not in line]
    assert len(rows) == len(FAMILIES)
    for family in FAMILIES.values():
        (row,) = [r for r in rows if f"`{family.hub_ids[0]}`" in r]
        _, language, licence, strategies, aligners = [cell.strip() for cell in row.strip("|").split("|")]
        assert language == family.languages and licence == f"`{family.licence.id}`"
        if family.strategies is None:  # every registered strategy: the built-in six, in the README's order
            from aetnet.registry import STRATEGIES

            assert sorted(strategies.split(", ")) == STRATEGIES.names()
        else:
            assert strategies.split(", ") == list(family.strategies)
        assert aligners == (", ".join(f"`{a}`" for a in family.aligners) if family.aligners else
                            "none: no image stream")


COMMANDS = [(path.name, command) for path in DOCS for command in bash_commands(path)]


def test_the_guides_show_commands():
    names = {name for name, _ in COMMANDS}
    assert {"quickstart.md", "export-predict-serve.md", "README.md"} <= names
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_command_in_the_guides_parses(page, command):
    argv = aetnet_argv(command)
    if argv is None:
        return
    argv = [a for a in argv if a != "..."]
    try:  # as aetnet.cli.main.main parses: key=value settings may follow the options
        args, extra = build_parser().parse_known_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{page}: `{command}` does not parse ({exc})")
    assert all("=" in e and not e.startswith("-") for e in extra), f"{page}: `{command}`: unknown {extra}"
    assert not extra or hasattr(args, "overrides"), f"{page}: `{command}` takes no key=value settings"
    overrides = [o for o in [*(getattr(args, "overrides", None) or []), *extra] if "=" in o]
    if overrides:
        parse_overrides(overrides)
        resolve_config(None, {"task": getattr(args, "task", "funsd")}, overrides)  # unknown keys fail here
