"""RVL-CDIP label files: ``path/to/image.tif <class id>`` per line, class ids 0-15 of the 16 classes.

In the official release they are ``labels/{train,val,test}.txt`` with images under ``images/`` beside
``labels/``; any other label file is one split named by its stem. :func:`parse_label_file` checks every
line (naming the file and line of a bad one), :func:`find_label_files` finds the files of a dataset
folder and :func:`find_image_root` the folder the listed paths are relative to. The pages themselves
are listed and recognised by :mod:`aetnet.tasks.rvl_cdip`.
"""

from __future__ import annotations

from pathlib import Path

from aetnet.data.documents.screen import count_given, guarded
from aetnet.data.documents.validate import expect_integer
from aetnet.errors import DataError

#: The 16 classes in the order of the official readme (class id = index).
RVL_CDIP_CLASSES: tuple[str, ...] = (
    "letter",
    "form",
    "email",
    "handwritten",
    "advertisement",
    "scientific report",
    "scientific publication",
    "specification",
    "file folder",
    "news article",
    "budget",
    "invoice",
    "presentation",
    "questionnaire",
    "resume",
    "memo",
)

_OFFICIAL_SPLITS = ("train", "val", "test")


def parse_label_file(label_file: Path, policy=None, split: str = "") -> list[tuple[str, int, int]]:
    """``(relative image path, class id, line number)`` per non-blank line of an RVL-CDIP label file.

    Args:
        label_file: the file.
        policy: a :class:`aetnet.data.documents.screen.BadDocuments`; with ``skip`` a bad line is recorded
            (file, line number, reason) and the good lines are returned; ``None`` raises.
        split: the split name recorded with a skipped line.

    Raises:
        DataError: a line is not ``path label`` with an integer label in 0-15 (names file and line).
    """
    try:
        raw_lines = Path(label_file).read_bytes().splitlines()
    except OSError as exc:
        raise DataError(f"label file cannot be read ({exc.strerror}); check the path", label_file) from None
    numbered = [(number, raw) for number, raw in enumerate(raw_lines, start=1) if raw.strip()]
    count_given(policy, len(numbered))
    entries = []
    for number, raw in numbered:
        entry = guarded(policy, lambda n=number, r=raw: _label_line(r, n, label_file), split,
                        f"{Path(label_file).name}:{number}", str(label_file))
        if entry is not None:
            entries.append(entry)
    return entries


def _label_line(raw: bytes, number: int, label_file: Path) -> tuple[str, int, int]:
    """One label line ``path/to/image.tif <class id>`` -> ``(path, class id, line number)``."""
    where = f"line {number}"
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DataError(f"{where} is not UTF-8 text; re-save the label file as UTF-8", label_file, where) from None
    parts = line.rsplit(maxsplit=1)  # paths may contain spaces, the label never does
    if len(parts) != 2:
        raise DataError(f"{where} is {line!r}, expected 'path/to/image.tif <class id 0-15>'", label_file, where)
    try:
        label = expect_integer(parts[1], where, label_file,
                               fix="each line is 'path/to/image.tif <class id 0-15>'")
    except DataError:
        raise DataError(f"{where} is {line!r}, expected 'path/to/image.tif <class id 0-15>'", label_file,
                        where) from None
    if not 0 <= label < len(RVL_CDIP_CLASSES):
        raise DataError(f"{where} has class id {label}, expected 0-{len(RVL_CDIP_CLASSES) - 1}", label_file, where)
    return parts[0], label, number


def find_label_files(path: Path) -> tuple[dict[str, Path], Path]:
    """The label file of each split and the folder they live in."""
    if path.is_file():
        return {path.stem: path}, path.parent
    labels_dir = path / "labels" if (path / "labels").is_dir() else path
    official = {s: labels_dir / f"{s}.txt" for s in _OFFICIAL_SPLITS if (labels_dir / f"{s}.txt").is_file()}
    if official:
        return official, labels_dir
    # The official labels/ folder also holds readme.txt, which is not a label file.
    others = {f.stem: f for f in sorted(labels_dir.glob("*.txt")) if not f.stem.lower().startswith("readme")}
    if not others:
        raise DataError(
            "no label file (train.txt, val.txt, test.txt or another '<split>.txt' of 'path label' lines)",
            labels_dir,
        )
    return others, labels_dir


def find_image_root(entries: list[tuple[str, int, int]], labels_dir: Path, label_file: Path) -> Path:
    """The folder the label paths are relative to: ``images/`` beside ``labels/``, else above it.

    The first of the first few listed images that exists decides (one missing image is that line's
    error, not the whole file's).
    """
    candidates = [labels_dir.parent / "images", labels_dir.parent, labels_dir]
    for rel, _, _ in entries[:20]:
        for root in candidates:
            if (root / rel).is_file():
                return root
    first, _, number = entries[0] if entries else ("?", 0, 1)
    raise DataError(
        f"image '{first}' not found under any of {[str(c) for c in candidates]}; pass image_root",
        label_file,
        f"line {number}",
    )
