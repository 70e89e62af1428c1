"""FUNSD: form understanding as BIO word labelling over question / answer / header.

Reads the original release (``training_data/`` and ``testing_data/``, each with ``annotations/*.json``
and ``images/*.png``; the folder itself or a parent holding ``dataset/``) and the Hugging Face
``nielsr/funsd-layoutlmv3`` schema (a ``save_to_disk`` folder, or a hub id when online).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import Document
from aetnet.data.documents.entities import Entity, entity_words
from aetnet.data.documents.screen import BadDocuments, count_given, guarded
from aetnet.data.documents.splits import map_splits
from aetnet.data.documents.stream import DocumentRef, stream_training
from aetnet.data.documents.validate import (
    DEFAULT_FIX,
    at,
    describe,
    expect_box,
    expect_image,
    expect_integer,
    expect_object,
    expect_text,
    read_json,
    require,
)
from aetnet.errors import AetnetError, DataError
from aetnet.registry import TASKS
from aetnet.tasks.base import TokenClassificationTask

logger = logging.getLogger(__name__)

FUNSD_URL = "https://guillaumejaume.github.io/FUNSD/dataset.zip"
#: Label order of ``nielsr/funsd-layoutlmv3`` (its ``ner_tags`` ClassLabel), kept for compatibility.
FUNSD_LABELS = ["O", "B-HEADER", "I-HEADER", "B-QUESTION", "I-QUESTION", "B-ANSWER", "I-ANSWER"]
ENTITY_TYPES = {"question": "QUESTION", "answer": "ANSWER", "header": "HEADER", "other": None}
SPLIT_FOLDERS = {"train": "training_data", "eval": "testing_data"}


def find_funsd_root(path: str | Path) -> Path:
    """The folder holding ``training_data``/``testing_data`` given it, its parent or a split folder."""
    path = Path(path)
    if not path.exists():
        raise AetnetError(f"{path}: FUNSD folder does not exist; pass --data to a FUNSD release folder")
    for candidate in (path, path / "dataset", path.parent):
        if (candidate / "training_data").is_dir() or (candidate / "testing_data").is_dir():
            return candidate
    if (path / "annotations").is_dir():
        return path
    raise AetnetError(
        f"{path}: not a FUNSD folder; expected training_data/ and testing_data/ with annotations/*.json "
        "and images/*.png (or a parent folder holding dataset/)"
    )


def parse_funsd_annotation(path: Path, image_path: Path | None, any_label: bool = False) -> Document:
    """One FUNSD annotation file -> a :class:`Document` with BIO labels, segments and links.

    ``any_label``: accept any entity label (the ``token`` task on a FUNSD-layout folder of one's own
    documents): ``other`` is outside (``O``), every other label is an entity type as written.

    Every field is checked for presence and type (:mod:`aetnet.data.documents.validate`): a malformed value
    is a :class:`DataError` naming the file and the field path (``form[3].words[0].box[1]``).
    """
    data = read_json(path, "the FUNSD annotation")
    form = require(expect_object(data, "", path), "form", "list", "", path,
                   fix="a FUNSD annotation is {\"form\": [entities]}")
    entities: list[Entity] = []
    links: set[tuple[int, int]] = set()
    for n, raw in enumerate(form):
        where = f"form[{n}]"
        entity = expect_object(raw, where, path)
        ent_id = require(entity, "id", "integer", where, path)
        label = require(entity, "label", "string", where, path).lower()
        if not label.strip():
            raise DataError(f"entity {n} has an empty label; {DEFAULT_FIX}", path, f"{where}.label")
        if not any_label and label not in ENTITY_TYPES:
            raise DataError(
                f"entity {n} has unknown label '{entity['label']}'; valid labels are "
                "question, answer, header, other",
                path,
                f"{where}.label",
            )
        ent_words = require(entity, "words", "list", where, path)
        # Checked, but not the segment box: the reference takes the union of the word boxes (which differs
        # from the annotated entity "box" on some entities).
        require(entity, "box", "box", where, path, optional=True)
        links.update(_links(entity, where, path))
        kind = ENTITY_TYPES[label] if not any_label else (None if label == "other" else entity["label"].strip())
        entities.append(Entity(ent_id, kind, _entity_words(ent_words, where, path)))
    page = entity_words(entities)
    size = _image_size(image_path, page.boxes, path)
    return page.document(
        id=path.stem,
        page_size=size,
        image_path=image_path,
        links=sorted(links),
        source=str(path),
        meta={"entities": len(form), "empty_entities": page.empty_entities, "skipped_words": page.skipped_words},
    )


def _links(entity: dict, where: str, path: Path) -> list[tuple[int, int]]:
    """An entity's ``linking`` pairs ``[from, to]`` of entity ids, each checked to be two integers."""
    links = []
    for k, pair in enumerate(require(entity, "linking", "list", where, path, optional=True, default=[])):
        field = at(f"{where}.linking", k)
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DataError(f"expected a pair of entity ids [from, to], got {describe(pair)}; {DEFAULT_FIX}",
                            path, field)
        links.append((expect_integer(pair[0], at(field, 0), path), expect_integer(pair[1], at(field, 1), path)))
    return links


def _entity_words(ent_words: list, where: str, path: Path) -> list[tuple[str, list[float]]]:
    """``(text, box)`` of each of an entity's words, checked (blank ones too: :func:`entity_words` drops them)."""
    checked = []
    for i, raw_word in enumerate(ent_words):
        word = expect_object(raw_word, f"{where}.words[{i}]", path)
        # The text as annotated (the reference tokenises it unstripped).
        text = require(word, "text", "text", f"{where}.words[{i}]", path)
        checked.append((text, require(word, "box", "box", f"{where}.words[{i}]", path)))
    return checked



def _image_size(image_path: Path | None, boxes: list, source: Path) -> tuple[int, int]:
    if image_path is not None:
        from aetnet.data.ocr.images import image_size

        return image_size(image_path)
    raise DataError(
        "no page image found beside the annotation; put it in images/ with the same file stem",
        source,
        "image",
    )


def read_funsd_folder(root: Path, policy=None, any_label: bool = False) -> dict[str, list[Document]]:
    """Read both splits of an original-layout FUNSD folder.

    Args:
        root: the folder holding ``training_data/`` and ``testing_data/``.
        policy: a :class:`aetnet.data.documents.screen.BadDocuments` deciding whether a broken annotation
            stops the read or is skipped and recorded; ``None`` raises.
    """
    return {split: [ref.read() for ref in refs] for split, refs in list_funsd_folder(root, policy, any_label).items()}


def list_funsd_folder(root: Path, policy=None, any_label: bool = False) -> dict[str, list[DocumentRef]]:
    """:func:`read_funsd_folder` as one :class:`~aetnet.data.documents.stream.DocumentRef` per form: every
    annotation is read (its problems go to ``policy`` in file order) and dropped; its id and file are kept."""
    splits: dict[str, list[DocumentRef]] = {}
    for split, folder in SPLIT_FOLDERS.items():
        ann_dir = root / folder / "annotations"
        if not ann_dir.is_dir():
            splits[split] = []
            continue
        refs, skipped = [], 0
        annotations = sorted(ann_dir.glob("*.json"))
        count_given(policy, len(annotations))
        for ann in annotations:
            image = next((p for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff")
                          if (p := root / folder / "images" / (ann.stem + ext)).is_file()), None)
            read = partial(parse_funsd_annotation, ann, image, any_label)
            doc = read() if policy is None else policy.run(read, split, ann.stem, str(ann))
            if doc is not None:
                refs.append(DocumentRef(doc.id, read))
                skipped += doc.meta["skipped_words"]
        splits[split] = refs
        if skipped:
            logger.info("%s/%s: %d words with empty text skipped (kept in each document's meta)",
                        root, folder, skipped)
    if not splits["train"] and not splits["eval"]:
        raise AetnetError(f"{root}: no annotations/*.json found in training_data/ or testing_data/")
    return splits


def read_funsd_hf(dataset_or_path: Any, policy=None) -> dict[str, list[Document]]:
    """Read the ``nielsr/funsd-layoutlmv3`` schema: ``id``, ``tokens``, ``bboxes`` (0-1000),
    ``ner_tags``, ``image``; from a DatasetDict, a ``save_to_disk`` folder or a hub id.

    Args:
        dataset_or_path: the dataset, its folder or its hub id.
        policy: a :class:`aetnet.data.documents.screen.BadDocuments`; with ``skip`` a malformed row is recorded
            and left out; ``None`` raises.
    """
    import datasets

    ds = _load_hf(dataset_or_path)
    names = FUNSD_LABELS
    splits: dict[str, list[Document]] = {}
    for split_name, part in ds.items():
        key = "train" if split_name == "train" else "eval"
        missing = {"tokens", "bboxes", "ner_tags", "image"} - set(part.column_names)
        if missing:
            raise AetnetError(
                f"{dataset_or_path}: split '{split_name}' lacks column(s) {sorted(missing)}; expected the "
                "nielsr/funsd-layoutlmv3 schema (id, tokens, bboxes, ner_tags, image)"
            )
        feature = part.features["ner_tags"].feature
        names = list(getattr(feature, "names", FUNSD_LABELS))
        # Undecoded: a page is opened from its bytes when used, and a corrupt one is this row's error.
        part = part.cast_column("image", datasets.Image(decode=False))
        docs = splits.setdefault(key, [])
        count_given(policy, len(part))
        for row_index, row in enumerate(part):
            source = f"{dataset_or_path}[{split_name}][{row_index}]"
            doc_id = str(row.get("id") if row.get("id") is not None else row_index)
            doc = guarded(policy, lambda r=row, s=source, d=doc_id, n=names: _hf_document(r, s, d, n), key, doc_id,
                          source)
            if doc is not None:
                docs.append(doc)
    if names != FUNSD_LABELS:
        logger.info("dataset label order %s differs from FUNSD_LABELS; labels are mapped by name", names)
    return splits


def _hf_document(row: dict[str, Any], source: str, doc_id: str, names: list[str]) -> Document:
    """One ``nielsr/funsd-layoutlmv3`` row -> a :class:`Document` (pixel boxes, label names)."""
    image = expect_image(row["image"], "image", source)
    width, height = image.size
    tokens = [expect_text(t, f"tokens[{i}]", source) for i, t in enumerate(require(row, "tokens", "list", "", source))]
    bboxes = [expect_box(b, f"bboxes[{i}]", source) for i, b in enumerate(require(row, "bboxes", "list", "", source))]
    tags = []
    for i, tag in enumerate(require(row, "ner_tags", "list", "", source)):
        tag = expect_integer(tag, f"ner_tags[{i}]", source)
        if not 0 <= tag < len(names):
            raise DataError(f"tag {tag} is not a label id 0-{len(names) - 1} ({', '.join(names)})", source,
                            f"ner_tags[{i}]")
        tags.append(tag)
    # The hub copy stores boxes already on 0-1000; back to pixels so one code path normalises.
    # Half a unit in keeps int(1000 * x / width) at the stored value despite float error.
    boxes = [[(b[0] + 0.5) * width / 1000, (b[1] + 0.5) * height / 1000, (b[2] + 0.5) * width / 1000,
              (b[3] + 0.5) * height / 1000] for b in bboxes]
    return Document(
        id=doc_id,
        words=tokens,
        boxes=boxes,
        page_size=(width, height),
        image=image,
        labels=[names[t] for t in tags],
        source=source,
        meta={"entities": sum(1 for t in tags if names[t].startswith("B-"))},
    )


def _load_hf(source: Any):
    import datasets

    if isinstance(source, (datasets.DatasetDict, dict)):
        return source
    path = Path(str(source))
    if path.exists():
        return datasets.load_from_disk(str(path))
    try:
        return datasets.load_dataset(str(source))
    except Exception as exc:  # offline, unknown id, ...
        raise AetnetError(
            f"could not load dataset '{source}' from the Hugging Face hub ({type(exc).__name__}); "
            "pass --data to a local FUNSD folder or a save_to_disk folder"
        ) from None


def download_funsd(cache: Path) -> Path:
    """Download the official FUNSD release into ``cache`` (once) and return its ``dataset/`` folder."""
    target = cache / "funsd"
    if (target / "dataset" / "training_data").is_dir():
        return target / "dataset"
    offline_hint = "FUNSD could not be downloaded (offline?): pass --data PATH to a FUNSD folder, or --demo"
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        raise AetnetError(offline_hint)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            archive = Path(tmp) / "dataset.zip"
            logger.info("downloading FUNSD from %s", FUNSD_URL)
            urllib.request.urlretrieve(FUNSD_URL, archive)  # noqa: S310 - fixed https URL
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "funsd")
            shutil.move(str(Path(tmp) / "funsd"), target)
    except OSError:
        raise AetnetError(offline_hint) from None
    return target / "dataset"


def load_funsd(path: str | None, policy=None) -> dict[str, list[Document]]:
    """FUNSD from a release folder, a ``save_to_disk`` folder, a hub id, or the official download."""
    from aetnet.models.tiny import cache_root

    if path is None:
        return read_funsd_folder(find_funsd_root(download_funsd(cache_root() / "datasets")), policy)
    p = Path(path)
    if p.exists() and ((p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file()):
        return read_funsd_hf(p, policy)
    if p.exists():
        return read_funsd_folder(find_funsd_root(p), policy)
    if "/" in str(path) and not str(path).startswith((".", "/")):
        return read_funsd_hf(path, policy)
    raise AetnetError(f"{path}: FUNSD folder does not exist; pass --data to a FUNSD release folder")


def funsd_splits(raw: dict[str, list[Document]], cfg: RunConfig, where: str):
    """The reader's ``train``/``eval`` through :func:`~aetnet.data.documents.splits.map_splits`: testing_data is
    the official test split; a release with one split only is carved by form (never scored on what
    trains)."""
    return map_splits({"train": raw.get("train", []), "test": raw.get("eval", [])}, ("test",),
                      cfg.data.eval_fraction, cfg.train.seed, where)


@TASKS.register("funsd")
class FunsdTask(TokenClassificationTask):
    """FUNSD entity labelling (question, answer, header), seqeval entity F1."""

    name = "funsd"
    labels = FUNSD_LABELS

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        if demo:
            from aetnet.data.demo import ensure_demo

            path = str(ensure_demo("funsd"))
        else:
            path = cfg.data.path
        folder = _release_folder(path)
        if folder is not None:  # the release layout: training streams from its annotation files
            splits = funsd_splits(list_funsd_folder(folder, bad_documents), cfg, f"FUNSD {path}")
            return stream_training(self, splits, cfg.data.max_train_documents, cfg.data.box_level, bad_documents)
        splits = funsd_splits(load_funsd(path, bad_documents), cfg, f"FUNSD {path}")
        for split in list(splits):
            splits[split] = self.keep_known_labels(splits[split], split, bad_documents)
        return splits


def _release_folder(path: str | None) -> Path | None:
    """The release folder :func:`load_funsd` reads for ``path`` (``None``: a Hugging Face source)."""
    from aetnet.models.tiny import cache_root

    if path is None:
        return find_funsd_root(download_funsd(cache_root() / "datasets"))
    p = Path(path)
    if not p.exists() or (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file():
        return None
    return find_funsd_root(p)
