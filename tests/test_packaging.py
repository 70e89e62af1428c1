"""The wheel installs tasks/ and recipes/ as aetnet.tasks / aetnet.recipes (never as top-level packages),
and holds none of the test data in tests/data; ``python -m aetnet`` works from the repository root against a
regular (not editable) install, and from anywhere else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout (built once for this file's tests)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
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
    (built,) = (tmp_path / "dist").glob("aetnet-*.whl")
    return built


def test_wheel_file_list(wheel):
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


def _regular_install(wheel: Path, target: Path) -> dict[str, str]:
    """Install ``wheel`` (not editable) into ``target``; the environment of a Python that sees that install and
    the third-party packages, but not this checkout's editable install (``python -S``: no ``.pth`` file runs)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)], check=True)
    site = [p for p in sys.path if p.endswith("site-packages")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *site]), "PYTHONDONTWRITEBYTECODE": "1"}


def _python(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_python_m_aetnet_from_the_checkout_against_a_regular_install(wheel, tmp_path):
    """From the repository root ``python -m aetnet`` imports the checkout's aetnet/ (it shadows the installed
    package), which has no tasks/ or recipes/ inside: aetnet maps the checkout's top-level folders."""
    env = _regular_install(wheel, tmp_path / "site")
    assert (tmp_path / "site" / "aetnet" / "recipes" / "funsd" / "full.yaml").is_file()
    where = ("import aetnet, aetnet.recipes, aetnet.tasks.funsd\n"
             "print(aetnet.__file__, aetnet.recipes.__file__, aetnet.tasks.funsd.__file__, sep='\\n')")
    out = _python(env, REPO, "-c", where)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(REPO / "aetnet" / "__init__.py"), str(REPO / "recipes" / "__init__.py"),
                                  str(REPO / "tasks" / "funsd.py")]
    listed = _python(env, REPO, "-m", "aetnet", "recipes", "ls")
    assert listed.returncode == 0, listed.stderr
    shipped = sorted(f"{p.parent.name}/{p.stem}" for p in (REPO / "recipes").glob("*/*.yaml"))
    assert listed.stdout.split() == shipped and "funsd/full" in shipped
    # Elsewhere the installed package answers with its own aetnet.tasks / aetnet.recipes.
    out = _python(env, tmp_path, "-c", where)
    assert out.returncode == 0, out.stderr
    site = tmp_path / "site" / "aetnet"
    assert out.stdout.split() == [str(site / "__init__.py"), str(site / "recipes" / "__init__.py"),
                                  str(site / "tasks" / "funsd.py")]
    assert _python(env, tmp_path, "-m", "aetnet", "recipes", "ls").stdout.split() == shipped


def test_only_aetnets_checkout_is_mapped(tmp_path):
    """The finder answers for a checkout of aetnet only: not for an installed package (it has tasks/ and recipes/
    inside) nor for a folder beside another project's pyproject.toml."""
    from aetnet.checkout import checkout_folders

    def tree(name: str, project: str, inside: bool) -> Path:
        root = tmp_path / name
        for folder in ("aetnet", "tasks", "recipes") + (("aetnet/tasks", "aetnet/recipes") if inside else ()):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / "__init__.py").write_text("")
        (root / "pyproject.toml").write_text(f'[project]\nname = "{project}"\n')
        return root / "aetnet"

    checkout = tree("checkout", "aetnet", inside=False)
    assert checkout_folders(checkout) == {"aetnet.tasks": checkout.parent / "tasks",
                                          "aetnet.recipes": checkout.parent / "recipes"}
    assert checkout_folders(tree("installed", "aetnet", inside=True)) == {}
    assert checkout_folders(tree("other", "other-project", inside=False)) == {}
    assert checkout_folders(REPO / "aetnet") == {"aetnet.tasks": REPO / "tasks", "aetnet.recipes": REPO / "recipes"}
