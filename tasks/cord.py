"""CORD receipts (Park et al., 2019): word labelling over 30 categories.

Three sources are read into :class:`~aetnet.data.documents.document.Document` objects:

* the original release, ``{train,dev,test}/{json,image}/receipt_XXXXX.{json,png}`` -> splits
  ``train``, ``dev``, ``test``;
* a single flat ``json/`` folder (with an optional ``image/`` folder beside it), as in samples:
  one pool of documents from which an evaluation split is carved out deterministically (ids
  sorted, then a permutation seeded by ``seed``; the first ``round(eval_fraction * n)`` go to
  ``test``, the rest to ``train``);
* the Hugging Face ``naver-clova-ix/cord-v2`` schema (columns ``image`` and ``ground_truth``, a
  JSON string with ``valid_line`` and ``meta``): a folder written by ``save_to_disk`` or a hub id
  (online only); splits keep the dataset's names (``train``, ``validation``, ``test``).

Each annotation becomes a document as in LayoutLMv3's CORD preprocessing
(:func:`~aetnet.tasks.cord_annotation.cord_document`: boxes from quads, BIO labels, one segment per line).

:class:`CordTask` (``cord``) trains on ``train`` and evaluates on ``test`` (else ``dev``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import Document
from aetnet.data.documents.screen import BadDocuments, count_given, guarded
from aetnet.data.documents.splits import Splits, carve_out_eval, map_splits
from aetnet.data.documents.stream import DocumentRef, stream_training
from aetnet.data.documents.validate import expect_image, read_json, require
from aetnet.errors import AetnetError, DataError
from aetnet.registry import TASKS
from aetnet.tasks.base import TokenClassificationTask
from aetnet.tasks.cord_annotation import CORD_CATEGORIES, cord_document, cord_label_list

logger = logging.getLogger(__name__)

__all__ = ["CORD_CATEGORIES", "EVAL_SPLITS", "CordTask", "carve_out", "cord_document", "cord_label_list", "read_cord"]

_ORIGINAL_SPLITS = ("train", "dev", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _find_image(image_dir: Path, stem: str) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
        candidate = image_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_json_file(json_file: Path, image_dir: Path, missing: list[str]) -> Document:
    gt = read_json(json_file, "the CORD annotation")
    image_path = _find_image(image_dir, json_file.stem)
    if image_path is None:
        missing.append(str(json_file))
    return cord_document(gt, json_file.stem, str(json_file), image_path=image_path)


def _json_folder(json_dir: Path, image_dir: Path, missing: list[str], policy=None) -> Iterator[tuple[Path, Document]]:
    """``(file, document)`` of each ``*.json`` annotation of ``json_dir`` in file order, read and checked; a broken
    file goes to ``policy`` (``None``: its error propagates) and is left out.

    Raises:
        DataError: no annotation file could be read.
    """
    files = sorted(json_dir.glob("*.json"))
    count_given(policy, len(files))
    found = False
    for json_file in files:
        doc = guarded(policy, lambda f=json_file: _read_json_file(f, image_dir, missing), json_dir.parent.name,
                      json_file.stem, str(json_file))
        if doc is not None:
            found = True
            yield json_file, doc
    if not found:
        raise DataError("no receipt_*.json annotation files in this folder", json_dir, "json")


def _read_json_folder(json_dir: Path, image_dir: Path, missing: list[str], policy=None) -> list[Document]:
    return [doc for _, doc in _json_folder(json_dir, image_dir, missing, policy)]


def _list_json_folder(json_dir: Path, image_dir: Path, missing: list[str], policy=None) -> list[DocumentRef]:
    """:func:`_read_json_folder` as references: every file is read (its problems go to ``policy`` in file
    order, as there) and dropped; what is kept is its id and how to read it again."""
    return [DocumentRef(doc.id, partial(_read_json_file, json_file, image_dir, []))
            for json_file, doc in _json_folder(json_dir, image_dir, missing, policy)]


def list_cord(path: str | Path, eval_fraction: float = 0.2, seed: int = 42,
              policy=None) -> dict[str, list[DocumentRef]] | None:
    """:func:`read_cord` for the JSON layouts, as :class:`~aetnet.data.documents.stream.DocumentRef` per split
    (the same splits, carve-out, problems and warning); ``None`` for a Hugging Face source (read whole)."""
    path = Path(path).expanduser()
    missing: list[str] = []
    if not path.is_dir() or _is_saved_dataset(path):
        return None
    if any((path / s / "json").is_dir() for s in _ORIGINAL_SPLITS):
        splits = {s: _list_json_folder(path / s / "json", path / s / "image", missing, policy)
                  for s in _ORIGINAL_SPLITS if (path / s / "json").is_dir()}
    elif (path / "json").is_dir() or path.name == "json":
        json_dir = path / "json" if (path / "json").is_dir() else path
        splits = carve_out(_list_json_folder(json_dir, json_dir.parent / "image", missing, policy), eval_fraction,
                           seed)
    else:
        return None  # read_cord names what is wrong
    _warn_missing(missing, splits, path)
    return splits


def _warn_missing(missing: list[str], splits: dict[str, list], path: Path) -> None:
    if missing:
        total = sum(len(docs) for docs in splits.values())
        logger.warning(
            "%d of %d CORD annotations under %s have no image (looked for %s beside json/ in image/); "
            "they are read as blank pages, text and layout only. First: %s",
            len(missing), total, path, "/".join(_IMAGE_SUFFIXES), missing[0],
        )


def carve_out(docs: list[Document], eval_fraction: float, seed: int) -> dict[str, list[Document]]:
    """Split one pool into ``train``/``test`` reproducibly with :func:`~aetnet.data.documents.splits.carve_out_eval`
    (ids sorted, permuted with ``seed``; ``round(eval_fraction * n)`` documents, at least one when the
    fraction is positive and there are two or more, go to ``test``); both splits stay sorted by id.
    """
    train, test = carve_out_eval(sorted(docs, key=lambda d: d.id), eval_fraction, seed, group=lambda d: d.id)
    return Splits({"train": train, "test": test}, eval_split=f"carved from the single pool ({eval_fraction:.0%})")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()


def _read_hf(dataset: Any, origin: str, eval_fraction: float, seed: int, policy=None) -> dict[str, list[Document]]:
    import datasets

    if isinstance(dataset, datasets.Dataset):
        return carve_out(_hf_split(dataset, "train", origin, policy), eval_fraction, seed)
    return {name: _hf_split(split, name, origin, policy) for name, split in dataset.items()}


def _hf_split(split: Any, name: str, origin: str, policy=None) -> list[Document]:
    import datasets

    missing = [c for c in ("image", "ground_truth") if c not in split.column_names]
    if missing:
        raise DataError(
            f"split '{name}' lacks column(s) {missing} of the naver-clova-ix/cord-v2 schema "
            f"(has {split.column_names})",
            origin,
            missing[0],
        )
    # Undecoded images: pages are opened lazily from their bytes, not held decoded in memory.
    split = split.cast_column("image", datasets.Image(decode=False))
    docs = []
    count_given(policy, len(split))
    for i, row in enumerate(split):
        source = f"{origin}[{name}][{i}]"
        doc = guarded(policy, lambda r=row, i=i, s=source: _hf_row(r, f"{name}_{i:05d}", s), name, f"{name}_{i:05d}",
                      source)
        if doc is not None:
            docs.append(doc)
    return docs


def _hf_row(row: dict[str, Any], doc_id: str, source: str) -> Document:
    """One ``naver-clova-ix/cord-v2`` row (``ground_truth`` JSON string, undecoded ``image``) -> a document."""
    text = require(row, "ground_truth", "string", "", source)
    try:
        gt = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the row",
                        source, "ground_truth") from None
    stored = row["image"] or {}
    image, image_path = None, None
    if stored.get("bytes"):
        image = expect_image(stored, "image", source)
    elif stored.get("path") and Path(stored["path"]).is_file():
        image_path = Path(stored["path"])
    return cord_document(gt, doc_id, source, image_path=image_path, image=image)


def _load_hub(dataset_id: str) -> Any:
    offline = any(
        os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    hint = "download it once (datasets.load_dataset(id).save_to_disk(folder)) and pass that local folder"
    if offline:
        raise AetnetError(f"'{dataset_id}' is not a local path and the Hugging Face hub is offline; {hint}")
    import datasets

    try:
        return datasets.load_dataset(dataset_id)
    except Exception as exc:  # network, auth and unknown-id errors all end the same way for a user
        raise AetnetError(f"cannot load '{dataset_id}' from the Hugging Face hub ({exc}); {hint}") from None


def read_cord(
    path: str | Path, eval_fraction: float = 0.2, seed: int = 42, policy=None
) -> dict[str, list[Document]]:
    """Read CORD into documents per split.

    Args:
        path: the release folder (holding ``train/``, ``dev/``, ``test/``), a flat folder holding
            ``json/`` (or that ``json/`` folder itself), a ``save_to_disk`` folder of the
            ``naver-clova-ix/cord-v2`` schema, or a hub id such as ``"naver-clova-ix/cord-v2"``.
        eval_fraction: share of documents carved out as ``test`` when the source has one split.
        seed: seed of that carve-out.
        policy: a :class:`aetnet.data.documents.screen.BadDocuments`; with ``skip`` a malformed file or row is
            recorded and left out; ``None`` raises.

    Returns:
        ``{split name: documents}``; documents of the original layout are sorted by id.

    Raises:
        DataError: a malformed annotation (the message names the file and field).
        AetnetError: the path does not exist and the hub cannot be reached.
    """
    path = Path(path).expanduser()
    if not path.exists():
        return _read_hf(_load_hub(str(path)), str(path), eval_fraction, seed, policy)
    if path.is_dir() and _is_saved_dataset(path):
        import datasets

        return _read_hf(datasets.load_from_disk(str(path)), str(path), eval_fraction, seed, policy)

    missing: list[str] = []
    splits: dict[str, list[Document]]
    if path.is_dir() and any((path / s / "json").is_dir() for s in _ORIGINAL_SPLITS):
        splits = {
            s: _read_json_folder(path / s / "json", path / s / "image", missing, policy)
            for s in _ORIGINAL_SPLITS
            if (path / s / "json").is_dir()
        }
    elif path.is_dir() and ((path / "json").is_dir() or path.name == "json"):
        json_dir = path / "json" if (path / "json").is_dir() else path
        pool = _read_json_folder(json_dir, json_dir.parent / "image", missing, policy)
        splits = carve_out(pool, eval_fraction, seed)
    else:
        raise DataError(
            "not a CORD folder: expected {train,dev,test}/json/, a json/ folder of receipt_*.json, "
            "or a Hugging Face save_to_disk folder",
            path,
        )
    _warn_missing(missing, splits, path)
    return splits


#: Reader split names that serve as evaluation, in order of preference.
EVAL_SPLITS = ("test", "dev", "validation")


@TASKS.register("cord")
class CordTask(TokenClassificationTask):
    """CORD receipt parsing as BIO word labelling over the 30 categories (61 labels), seqeval F1.

    Splits: ``train`` trains and ``test`` evaluates (``dev`` is not used, as in LayoutLMv3's CORD
    results); without ``test``, ``dev`` (or the Hugging Face ``validation``) evaluates. A flat
    ``json/`` folder or a single Hugging Face split is carved into ``train``/``test`` by the reader
    with ``data.eval_fraction`` and ``train.seed``.

    With 61 labels, ``LayoutLMv3ForTokenClassification`` builds its dense head (dense + tanh +
    dropout + output projection) rather than a single linear layer, as LayoutLMv3 used for CORD.
    """

    name = "cord"
    labels = cord_label_list()

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        if demo:
            from aetnet.data.demo import ensure_demo

            path = str(ensure_demo("cord"))
        elif cfg.data.path:
            path = cfg.data.path
        else:
            path = "naver-clova-ix/cord-v2"  # the hub copy (online only); the reader explains offline
        listed = list_cord(path, cfg.data.eval_fraction, cfg.train.seed, bad_documents)
        if listed is None:  # a Hugging Face source: read whole
            splits = map_splits(read_cord(path, cfg.data.eval_fraction, cfg.train.seed, bad_documents),
                                EVAL_SPLITS, cfg.data.eval_fraction, cfg.train.seed, f"CORD {path}")
            for split in list(splits):
                splits[split] = docs = self.keep_known_labels(splits[split], split, bad_documents)
                for doc in docs:
                    _count_entities(doc)
            return splits
        # The JSON files: every split is listed (each file read and dropped), label-checked in split order as
        # the lists were; the training split then streams from its files (DocumentStream), never held whole.
        splits = map_splits(listed, EVAL_SPLITS, cfg.data.eval_fraction, cfg.train.seed, f"CORD {path}")
        return stream_training(self, splits, cfg.data.max_train_documents, cfg.data.box_level, bad_documents,
                               _count_entities)


def _count_entities(doc: Document) -> None:
    """One entity per annotated line, counted by `aetnet inspect`."""
    doc.meta["entities"] = sum(1 for label in doc.labels or [] if label.startswith("B-"))
