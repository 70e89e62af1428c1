"""The wheel installs tasks/ and recipes/ as aetnet.tasks / aetnet.recipes (never as top-level packages),
and holds none of the test data in tests/data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_file_list(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("aetnet", "tasks", "recipes", "tests"):  # tests/ too: the build sees tests/data, as in a checkout
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "dist"), str(src)],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("aetnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("aetnet/tasks/__init__.py", "aetnet/tasks/base.py", "aetnet/tasks/funsd.py",
                     "aetnet/recipes/funsd/full.yaml", "aetnet/cli/main.py", "aetnet/data/corpus.txt",
                     "aetnet/data/demo/forms.py", "aetnet/data/documents/pages.schema.json", "aetnet/tasks/generic.py"):
        assert expected in names, expected
    # Every package of the source tree is in the wheel (the package list of pyproject.toml is explicit).
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "aetnet").rglob("__init__.py")}
    assert {"aetnet/strategies/lora", "aetnet/strategies/prompt"} <= packages
    assert sorted(f"{package}/__init__.py" for package in packages if f"{package}/__init__.py" not in names) == []
    tops = {n.split("/")[0] for n in names}
    assert "tasks" not in tops and "recipes" not in tops
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    assert {f"aetnet/{p}" for p in shipped} <= names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "aetnet = aetnet.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()
    # The real samples are test fixtures only (their terms differ from the package's): no file of
    # tests/data, under any folder, and nothing under tests/.
    data = {p.name for p in (REPO / "tests" / "data").rglob("*") if p.is_file() and p.name != "README.md"}
    assert len(data) > 50  # the samples are there to be left out
    assert not {n for n in names if n.startswith("tests/") or n.rsplit("/", 1)[-1] in data}
