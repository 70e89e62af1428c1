"""Checks of a page line that go beyond one field's type (used by :mod:`aetnet.data.documents.pages`).

- the ``image`` value: a file path (not a ``data:`` URL, not a folder), errors naming the line;
- tagged ``labels``: BIO, BIOES (``S-``/``E-``) or BILOU (``U-``/``L-``) tags become the BIO tags aetnet
  trains on; a mix of tags and plain names, or a tag that continues no entity, is one clear error;
- ``links``: both ends must be entity (segment) ids of the page, and an entity never links to itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aetnet.errors import DataError

#: Tag letters of the schemes read: Begin, Inside (BIO); End, Single (BIOES); Last, Unit (BILOU).
_TAGS = {"B", "I", "E", "S", "L", "U"}


#: The longest file path shown whole in an error (a longer one is cut, e.g. a 300-character file name).
PATH_SHOWN = 240


def shorten(text: Any, limit: int = 80) -> str:
    """``text`` as a string of at most ``limit`` characters (``...`` and the full length when cut)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text):,} characters)"


def page_image_path(image: Any, where: str, base: Path) -> Path:
    """The file a page's ``image`` value names (relative to ``base``), checked to be an existing file.

    Raises:
        DataError: naming ``where`` (``file:line``): not a string, a ``data:`` URL, a path the system
            refuses (too long), a folder, or a missing file.
    """
    if not isinstance(image, str) or not image.strip():
        raise DataError("must be the image path relative to the JSONL file", where, "image")
    if image.startswith("data:"):
        raise DataError(f"is a data: URL ({shorten(image, 40)}); pages.jsonl takes an image file path: save the "
                        "image as a file beside the JSONL file and name it", where, "image")
    path = Path(image) if Path(image).is_absolute() else base / image
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # e.g. a file name longer than the system allows
        raise DataError(f"image path {shorten(path)} cannot be used ({exc.strerror or exc}); give the image file's "
                        "path relative to the JSONL file", where, "image") from None
    if is_dir:
        raise DataError(f"image path {shorten(path, PATH_SHOWN)} is a directory, not an image file; name the image "
                        "file itself", where, "image")
    if not is_file:
        raise DataError(f"image file {shorten(path, PATH_SHOWN)} does not exist; fix the path (relative to the JSONL "
                        "file) or add the image", where, "image")
    return path


def image_error_at(error: DataError, image: Path, where: str) -> DataError:
    """``error`` about the image file ``image`` restated to name the page line ``where`` that refers to it."""
    text = str(error)
    if error.path and text.startswith(error.path):
        text = text[len(error.path):].lstrip(",: ")
        text = text.removeprefix("field 'image': ")
    return DataError(f"image {shorten(image, PATH_SHOWN)}: {text}", where, "image")


def tag_scheme(labels: list[str]) -> str | None:
    """``"tags"`` when every non-``O`` label is a ``X-TYPE`` tag, ``None`` when none is (plain names).

    Raises:
        ValueError: some labels are tags and others plain names (the message names one of each).
    """
    tagged = [lb for lb in labels if lb != "O" and lb[:2].endswith("-") and lb[0] in _TAGS and len(lb) > 2]
    plain = [lb for lb in labels if lb != "O" and lb not in tagged]
    if tagged and plain:
        raise ValueError(f"mix tags ('{tagged[0]}') and plain names ('{plain[0]}')")
    return "tags" if tagged else None


def tags_to_bio(labels: list[str], where: str) -> list[str]:
    """BIO, BIOES or BILOU tags -> BIO: ``S-``/``U-`` start (and end) an entity, ``E-``/``L-`` continue one.

    Raises:
        DataError: the labels mix BIOES and BILOU letters, or an ``I-``/``E-``/``L-`` tag does not
            continue an entity of its type (after ``B-X``/``I-X``); BIO pages (only ``B-``/``I-``) keep
            their tags unchanged, as seqeval reads them.
    """
    letters = {lb[0] for lb in labels if lb != "O"}
    if letters & {"E", "S"} and letters & {"L", "U"}:
        raise DataError("labels mix BIOES tags (E-, S-) with BILOU tags (L-, U-); use one scheme", where, "labels")
    if letters <= {"B", "I"}:
        return list(labels)
    out, open_type = [], None
    for i, label in enumerate(labels):
        tag, kind = (label[0], label[2:]) if label != "O" else ("O", None)
        if tag in ("I", "E", "L") and open_type != kind:
            raise DataError(f"tag '{label}' of word {i} continues no {kind} entity (the word before is "
                            f"'{labels[i - 1] if i else 'the page start'}'); begin the entity with B-{kind} "
                            f"(or S-{kind} for a single word)", where, f"labels[{i}]")
        out.append("O" if tag == "O" else f"{'B' if tag in ('B', 'S', 'U') else 'I'}-{kind}")
        open_type = kind if tag in ("B", "I") else None  # E/L/S/U close the entity
    return out


def check_links(links: list[tuple[int, int]], segments: list[int] | None, where: str) -> None:
    """Each link joins two different entity (segment) ids of the page.

    Raises:
        DataError: an end names an id that no word carries, or both ends are one entity.
    """
    if not links or segments is None:
        return
    ids = set(segments) - {-1}
    for k, (a, b) in enumerate(links):
        missing = [x for x in (a, b) if x not in ids]
        if missing:
            known = ", ".join(str(x) for x in sorted(ids)[:10]) + (", ..." if len(ids) > 10 else "")
            raise DataError(f"link [{a}, {b}] names entity id {missing[0]}, which no word of the page carries "
                            f"(ids: {known or 'none'}); link the entity / segment ids of the words",
                            where, f"links[{k}]")
        if a == b:
            raise DataError(f"link [{a}, {b}] joins entity {a} to itself; a link goes from one entity to another",
                            where, f"links[{k}]")
