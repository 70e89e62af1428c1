"""XFUND (Xu et al. 2022): forms in seven languages, read from the original v1.0 release as published.

A release folder holds, per language ``xx`` (``zh ja es fr it de pt``) and split (``train``, ``val``),
``xx.split.json`` ``{"lang", "documents": [{"id", "img": {"fname", "width", "height"}, "document":
[{"id", "text", "box", "label", "words": [{"box", "text"}], "linking"}]}]}`` and the page images
``xx_split_N.jpg``: beside the JSON, in a folder ``xx.split/`` (an extracted zip), or inside the release
zip ``xx.split.zip`` (read member by member, never extracted). A folder may hold only some languages
or one split of a language: :func:`xfund_inventory` says what is there.

Each form becomes one :class:`~aetnet.data.documents.document.Document`: its words are XFUND's
``words`` (one character or a whole phrase; every word of an entity with text is kept, as the
reference preprocessing maps boxes from all of them), word labels are BIO over FUNSD's entity
types (``other`` is ``O``), ``segment_ids`` the entity ids, ``links`` the ``linking`` pairs, and
``meta["segment_texts"]`` every entity's ``text``, which the reference encoding tokenises whole
(:mod:`aetnet.data.encoding.xfund`).
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from aetnet.data.documents.boxes import union_box
from aetnet.data.documents.document import Document
from aetnet.data.documents.validate import DEFAULT_FIX, at, describe, expect_integer, expect_object, read_json, require
from aetnet.errors import AetnetError, DataError

#: The release's languages, in the order of the paper's tables.
LANGUAGES = ("zh", "ja", "es", "fr", "it", "de", "pt")
#: The release's splits; ``val`` is what papers report on (aetnet's test split).
SPLITS = ("train", "val")
#: XFUND's entity labels -> FUNSD's entity types (``other`` is outside).
ENTITY_TYPES = {"header": "HEADER", "question": "QUESTION", "answer": "ANSWER", "other": None}


def languages_of(lang: str | None) -> tuple[str, ...]:
    """The languages ``--lang`` names (``None`` and ``all``: all seven)."""
    if lang in (None, "all"):
        return LANGUAGES
    if lang not in LANGUAGES:
        raise AetnetError(f"--lang {lang} is not an XFUND language; choose one of: {', '.join(LANGUAGES)}, all")
    return (lang,)


def json_file(root: Path, lang: str, split: str) -> Path:
    """Where the release keeps one language's split: ``root/xx.split.json``."""
    return root / f"{lang}.{split}.json"


def xfund_inventory(root: Path) -> dict[str, list[str]]:
    """Per language present in ``root``, the splits whose JSON file is there."""
    found: dict[str, list[str]] = {}
    for lang in LANGUAGES:
        splits = [split for split in SPLITS if json_file(root, lang, split).is_file()]
        if splits:
            found[lang] = splits
    return found


def _open_zip(path: str) -> zipfile.ZipFile:
    """One open handle per release zip and process (members are read on demand). A forked DataLoader
    worker opens its own: a handle inherited over a fork shares its file offset with the parent's."""
    return _open_zip_in(path, os.getpid())


@functools.lru_cache(maxsize=16)
def _open_zip_in(path: str, pid: int) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


@dataclass(frozen=True)
class ZipMember:
    """A page image inside a release zip (``zh.train.zip``), read on demand without extracting the zip.

    Attributes:
        path: the zip file.
        member: the member's name in the zip.
    """

    path: str
    member: str

    def __str__(self) -> str:
        return f"{self.path}:{self.member}"

    def _open(self) -> Image.Image:
        try:
            data = _open_zip(self.path).read(self.member)
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise DataError(f"image is too large to be a page ({exc}); downscale it", str(self), "image") from None
        except (UnidentifiedImageError, OSError, SyntaxError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"image cannot be read ({exc}); replace the zip with the release's copy", str(self),
                            "image") from None

    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the upright page, from the image header."""
        from aetnet.data.ocr.images import upright_size

        with self._open() as img:
            return upright_size(img)

    def load(self) -> Image.Image:
        """The page decoded as an RGB image."""
        from aetnet.data.ocr.images import upright

        with self._open() as img:
            try:
                img.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"image cannot be decoded ({exc}); the zip member is corrupt: replace the zip",
                                str(self), "image") from None
            return upright(img).convert("RGB")


class ImageFinder:
    """Finds ``fname`` for one language's split: beside the JSON, in ``xx.split/``, or in ``xx.split.zip``."""

    def __init__(self, root: Path, lang: str, split: str):
        self.root, self.stem = root, f"{lang}.{split}"
        self.zip_path = root / f"{self.stem}.zip"
        self.members: dict[str, str] | None = None

    def find(self, fname: str, source: Path, field: str) -> tuple[Path | None, ZipMember | None]:
        """``(image file, None)`` or ``(None, zip member)``.

        Raises:
            DataError: the image is in none of the three places.
        """
        for candidate in (self.root / fname, self.root / self.stem / fname):
            if candidate.is_file():
                return candidate, None
        if self.zip_path.is_file():
            if self.members is None:
                try:
                    names = _open_zip(str(self.zip_path)).namelist()
                except (OSError, zipfile.BadZipFile) as exc:
                    raise DataError(f"not a readable zip ({exc}); replace it with the release's {self.stem}.zip",
                                    self.zip_path) from None
                self.members = {Path(name).name: name for name in names if not name.endswith("/")}
            if fname in self.members:
                return None, ZipMember(str(self.zip_path), self.members[fname])
        raise DataError(
            f"page image '{fname}' not found beside the JSON, in {self.stem}/ or in {self.stem}.zip; put the "
            f"release's {self.stem}.zip (or its images) in {self.root}", source, field)


def _links(entity: dict, where: str, path: Path) -> list[tuple[int, int]]:
    """An entity's ``linking`` pairs ``[from, to]``, each checked to be two integers."""
    out = []
    for k, pair in enumerate(require(entity, "linking", "list", where, path, optional=True, default=[])):
        field = at(f"{where}.linking", k)
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DataError(f"expected a pair of entity ids [from, to], got {describe(pair)}; {DEFAULT_FIX}",
                            path, field)
        out.append((expect_integer(pair[0], at(field, 0), path), expect_integer(pair[1], at(field, 1), path)))
    return out


def parse_xfund_document(raw: dict, where: str, path: Path, lang: str, images: ImageFinder) -> Document:
    """One element of ``documents`` -> a :class:`Document` (see the module docstring).

    Raises:
        DataError: a field is missing or of the wrong type, a label is not one of XFUND's, a link names an
            entity the form lacks, or the page image is missing.
    """
    doc = expect_object(raw, where, path)
    doc_id = str(require(doc, "id", "string", where, path))
    img = require(doc, "img", "object", where, path)
    fname = require(img, "fname", "string", f"{where}.img", path)
    stated = (require(img, "width", "integer", f"{where}.img", path),
              require(img, "height", "integer", f"{where}.img", path))
    entities = require(doc, "document", "list", where, path)
    words, boxes, labels, segments = [], [], [], []
    segment_boxes: dict[int, list[float]] = {}
    segment_texts: dict[int, str] = {}
    links: set[tuple[int, int]] = set()
    link_fields: list[tuple[tuple[int, int], str]] = []
    entity_labels: Counter = Counter()
    ids: set[int] = set()
    raw_words = empty_entities = 0
    for n, raw_entity in enumerate(entities):
        ent_where = f"{where}.document[{n}]"
        entity = expect_object(raw_entity, ent_where, path)
        ent_id = require(entity, "id", "integer", ent_where, path)
        if ent_id in ids:
            raise DataError(f"entity id {ent_id} appears twice in form '{doc_id}'; give every entity its own id",
                            path, f"{ent_where}.id")
        ids.add(ent_id)
        label = require(entity, "label", "string", ent_where, path)
        if label not in ENTITY_TYPES:
            raise DataError(f"unknown label '{label}'; XFUND's labels are header, question, answer, other: "
                            f"{DEFAULT_FIX}", path, f"{ent_where}.label")
        entity_labels[label] += 1
        text = require(entity, "text", "text", ent_where, path)
        require(entity, "box", "box", ent_where, path)
        for k, pair in enumerate(_links(entity, ent_where, path)):
            links.add(tuple(sorted(pair)))
            link_fields.append((pair, at(f"{ent_where}.linking", k)))
        ent_words = require(entity, "words", "list", ent_where, path)
        raw_words += len(ent_words)
        checked = []
        for i, raw_word in enumerate(ent_words):
            word = expect_object(raw_word, f"{ent_where}.words[{i}]", path)
            checked.append((require(word, "text", "text", f"{ent_where}.words[{i}]", path),
                            require(word, "box", "box", f"{ent_where}.words[{i}]", path)))
        if len(text) == 0:  # the reference leaves out entities without text, and their links
            empty_entities += 1
            continue
        if not checked:
            raise DataError(f"entity {ent_id} has text but no words; give its words with their boxes: "
                            f"{DEFAULT_FIX}", path, f"{ent_where}.words")
        kind = ENTITY_TYPES[label]
        for i, (word_text, box) in enumerate(checked):
            words.append(word_text)
            boxes.append(box)
            labels.append("O" if kind is None else f"{'B' if i == 0 else 'I'}-{kind}")
            segments.append(ent_id)
        segment_boxes[ent_id] = [float(v) for v in union_box([box for _, box in checked])]
        segment_texts[ent_id] = text
    for (a, b), field in link_fields:
        if a not in ids or b not in ids:
            raise DataError(f"link [{a}, {b}] names entity {b if a in ids else a}, which form '{doc_id}' lacks; "
                            f"{DEFAULT_FIX}", path, field)
    image_path, image_ref = images.find(fname, path, f"{where}.img.fname")
    if image_path is not None:
        from aetnet.data.ocr.images import image_size

        size = image_size(image_path)
    else:
        size = image_ref.size()
    if size != stated:
        raise DataError(f"the page image {fname} is {size[0]}x{size[1]} pixels but the JSON states "
                        f"{stated[0]}x{stated[1]}; use the release's images (boxes are pixels on them)",
                        path, f"{where}.img")
    kept = {a for a, b in links} | {b for a, b in links}
    return Document(
        id=doc_id,
        words=words,
        boxes=boxes,
        page_size=size,
        image_path=image_path,
        image_ref=image_ref,
        labels=labels,
        segment_ids=segments,
        segment_boxes=segment_boxes,
        links=sorted((a, b) for a, b in links if a in segment_texts and b in segment_texts),
        source=f"{path}:{doc_id}",
        meta={"lang": lang, "entities": len(entities) - empty_entities, "empty_entities": empty_entities,
              "json_entities": len(entities), "json_words": raw_words, "entity_labels": dict(entity_labels),
              "json_links": len(links), "linked_entities": len(kept), "segment_texts": segment_texts},
    )


def read_xfund_file(root: Path, lang: str, split: str, policy=None) -> list[Document]:
    """Every form of ``root/xx.split.json``.

    Args:
        root: the release folder.
        lang: the language code.
        split: ``train`` or ``val``.
        policy: a :class:`aetnet.data.documents.screen.BadDocuments`; ``None`` raises at the first bad form.
    """
    from aetnet.data.documents.screen import count_given, guarded

    path = json_file(root, lang, split)
    data = expect_object(read_json(path, "an XFUND file"), "", path,
                         fix='an XFUND file is {"lang", "documents": [forms]}')
    stated = data.get("lang")
    if stated is not None and stated != lang:
        raise DataError(f"the file says its language is {describe(stated)}, its name says '{lang}'; rename the "
                        "file xx.split.json after its language", path, "lang")
    documents = require(data, "documents", "list", "", path, fix='an XFUND file is {"lang", "documents": [forms]}')
    images = ImageFinder(root, lang, split)
    count_given(policy, len(documents))
    out = []
    for n, raw in enumerate(documents):
        doc_id = str(raw.get("id", n)) if isinstance(raw, dict) else str(n)
        doc = guarded(policy, lambda r=raw, w=f"documents[{n}]": parse_xfund_document(r, w, path, lang, images),
                      split, doc_id, str(path))
        if doc is not None:
            out.append(doc)
    return out


def read_xfund(root: str | Path, lang: str | None, policy=None, partial: bool = False) -> dict[str, list[Document]]:
    """``{"train": [...], "val": [...]}`` for the languages ``lang`` names, in language order.

    Args:
        root: the release folder.
        lang: a language code or ``all``.
        policy: the bad-document policy (``None`` raises).
        partial: read whatever files of those languages are there (``aetnet inspect``); otherwise every
            language's ``train`` and ``val`` file must be there.

    Raises:
        AetnetError: ``root`` is not a folder, holds none of the files, or (not ``partial``) lacks one.
    """
    root = Path(root)
    if not root.is_dir():
        raise AetnetError(f"{root}: XFUND folder does not exist; pass --data to the folder holding the release's "
                          "xx.train.json / xx.val.json files")
    wanted = languages_of(lang)
    missing = [json_file(root, la, split) for la in wanted for split in SPLITS
               if not json_file(root, la, split).is_file()]
    present = xfund_inventory(root)
    if not partial and missing:
        have = ", ".join(f"{la}.{s}.json" for la, splits in present.items() for s in splits) or "none"
        raise AetnetError(
            f"{missing[0]}: missing ({len(missing)} XFUND file(s) missing for --lang {lang or 'all'}: "
            f"{', '.join(p.name for p in missing)}; the folder has {have}); add the release's files, or pass "
            "--lang with a language the folder holds")
    if not any(la in present for la in wanted):
        raise AetnetError(f"{root}: no XFUND file for --lang {lang or 'all'} (expected "
                          f"{json_file(root, wanted[0], 'train').name} and {json_file(root, wanted[0], 'val').name})")
    return {split: [doc for la in wanted if json_file(root, la, split).is_file()
                    for doc in read_xfund_file(root, la, split, policy)] for split in SPLITS}
