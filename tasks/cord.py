"""CORD receipts (Park et al., 2019): word labelling over 30 categories.

Three sources are read into :class:`~aetnet.data.document.Document` objects:

* the original release, ``{train,dev,test}/{json,image}/receipt_XXXXX.{json,png}`` -> splits
  ``train``, ``dev``, ``test``;
* a single flat ``json/`` folder (with an optional ``image/`` folder beside it), as in samples:
  one pool of documents from which an evaluation split is carved out deterministically (ids
  sorted, then a permutation seeded by ``seed``; the first ``round(eval_fraction * n)`` go to
  ``test``, the rest to ``train``);
* the Hugging Face ``naver-clova-ix/cord-v2`` schema (columns ``image`` and ``ground_truth``, a
  JSON string with ``valid_line`` and ``meta``): a folder written by ``save_to_disk`` or a hub id
  (online only); splits keep the dataset's names (``train``, ``validation``, ``test``).

Each annotation line ``valid_line[i]`` has a ``category`` and ``words`` with a ``quad``
(``x1..x4``, ``y1..y4`` pixel corners). As in LayoutLMv3's CORD preprocessing, a word's box is
its quad's top-left ``(x1, y1)`` (clipped at 0) and bottom-right ``(x3, y3)`` corners (swapped
when inverted), labels are BIO over the line's category (first word ``B-``, the rest ``I-``), and
each ``valid_line`` is one segment whose box is the union of its words' boxes (one line = one
entity = one category). The line's ``group_id`` (all lines of one menu item: count, name and
price) is kept per word in ``meta["group_ids"]``; it is not a box.

:class:`CordTask` (``cord``) trains on ``train`` and evaluates on ``test`` (else ``dev``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from PIL import Image

from aetnet.config import RunConfig
from aetnet.data.boxes import union_boxes
from aetnet.data.document import Box, Document
from aetnet.data.images import image_size as read_image_size
from aetnet.data.screen import count_given, guarded
from aetnet.data.validate import expect_image, expect_object, read_json, require
from aetnet.errors import AetnetError, DataError
from aetnet.registry import TASKS
from aetnet.tasks.base import TokenClassificationTask
from aetnet.tasks.splits import Splits, carve_out_eval, map_splits

logger = logging.getLogger(__name__)

#: The 30 CORD v2 categories (``group.subgroup``), in alphabetical order; this order fixes the
#: label ids (see :func:`cord_label_list`), so never reorder it.
CORD_CATEGORIES: tuple[str, ...] = (
    "menu.cnt",
    "menu.discountprice",
    "menu.etc",
    "menu.itemsubtotal",
    "menu.nm",
    "menu.num",
    "menu.price",
    "menu.sub_cnt",
    "menu.sub_etc",
    "menu.sub_nm",
    "menu.sub_price",
    "menu.sub_unitprice",
    "menu.unitprice",
    "menu.vatyn",
    "sub_total.discount_price",
    "sub_total.etc",
    "sub_total.othersvc_price",
    "sub_total.service_price",
    "sub_total.subtotal_price",
    "sub_total.tax_price",
    "total.cashprice",
    "total.changeprice",
    "total.creditcardprice",
    "total.emoneyprice",
    "total.menuqty_cnt",
    "total.menutype_cnt",
    "total.total_etc",
    "total.total_price",
    "void_menu.nm",
    "void_menu.price",
)

_CATEGORY_SET = frozenset(CORD_CATEGORIES)
_ORIGINAL_SPLITS = ("train", "dev", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def cord_label_list() -> list[str]:
    """``["O", "B-menu.cnt", "I-menu.cnt", ...]``: 61 BIO labels in :data:`CORD_CATEGORIES` order."""
    labels = ["O"]
    for category in CORD_CATEGORIES:
        labels += [f"B-{category}", f"I-{category}"]
    return labels


def _quad_box(quad: Any, source: str, where: str) -> Box:
    """The reference CORD quad -> box: top-left ``(x1, y1)`` clipped at 0 and bottom-right
    ``(x3, y3)``, each axis swapped when inverted (as LayoutLMv3's CORD script does). All eight
    corner numbers are checked."""
    quad = expect_object(quad, where, source)
    xs = [require(quad, f"x{k}", "number", where, source) for k in range(1, 5)]
    ys = [require(quad, f"y{k}", "number", where, source) for k in range(1, 5)]
    x0, y0, x1, y1 = max(0.0, float(xs[0])), max(0.0, float(ys[0])), float(xs[2]), float(ys[2])
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _page_size(gt: dict[str, Any], image_size: tuple[int, int] | None, source: str) -> tuple[int, int]:
    """``meta.image_size`` (checked when given), else the image's size. (The reference script divides
    by the image's size; the quads are drawn on the annotated size, so where the two differ it wins.)"""
    meta = require(gt, "meta", "object", "", source, optional=True, default={})
    size = require(meta, "image_size", "object", "meta", source, optional=True)
    if size is not None:
        return (require(size, "width", "integer", "meta.image_size", source),
                require(size, "height", "integer", "meta.image_size", source))
    if image_size is not None:
        return image_size
    raise DataError(
        "no meta.image_size {width, height} and no image to measure; add the size or the image",
        source,
        "meta.image_size",
    )


def cord_document(
    gt: dict[str, Any],
    doc_id: str,
    source: str,
    image_path: Path | None = None,
    image: Image.Image | None = None,
) -> Document:
    """Build one :class:`Document` from a parsed CORD annotation (``valid_line`` + ``meta``).

    Args:
        gt: the annotation dict.
        doc_id: the document id.
        source: the annotation's origin, named in errors.
        image_path: the receipt image file, if any.
        image: the receipt image, if already opened (Hugging Face rows).

    Raises:
        DataError: a line has an unknown category, a word a malformed quad, or the page has no size.
    """
    gt = expect_object(gt, "", source)
    lines = require(gt, "valid_line", "list", "", source, fix="is this a CORD annotation?")
    words: list[str] = []
    boxes: list[Box] = []
    labels: list[str] = []
    segment_ids: list[int] = []
    group_ids: list[int] = []
    skipped = 0
    for i, raw in enumerate(lines):
        where = f"valid_line[{i}]"
        line = expect_object(raw, where, source)
        category = require(line, "category", "string", where, source)
        if category not in _CATEGORY_SET:
            raise DataError(
                f"unknown category {category!r}; expected one of: {', '.join(CORD_CATEGORIES)}",
                source,
                f"{where}.category",
            )
        # The menu item the line belongs to: kept in meta, not a box.
        group = require(line, "group_id", "integer", where, source, optional=True, default=-1)
        first = True
        for j, raw_word in enumerate(require(line, "words", "list", where, source)):
            word = expect_object(raw_word, f"{where}.words[{j}]", source)
            # The text as annotated (the reference tokenises it unstripped); blank words are dropped.
            text = require(word, "text", "text", f"{where}.words[{j}]", source)
            box = _quad_box(require(word, "quad", "object", f"{where}.words[{j}]", source), source,
                            f"{where}.words[{j}].quad")
            if not text.strip():
                skipped += 1  # a box without text cannot be tokenised
                continue
            words.append(text)
            boxes.append(box)
            labels.append(("B-" if first else "I-") + category)
            segment_ids.append(i)  # one line = one entity = one segment, as the reference
            group_ids.append(group)
            first = False

    segment_boxes = union_boxes(boxes, segment_ids)  # a line's box: the union of its (non-empty) words' boxes

    image_size = None
    if image is not None:
        image_size = image.size
    elif image_path is not None:
        image_size = read_image_size(image_path)  # header only
    meta = gt.get("meta") or {}  # checked to be an object by _page_size
    page_size = _page_size(gt, image_size, source)
    return Document(
        id=doc_id,
        words=words,
        boxes=boxes,
        page_size=page_size,
        image=image,
        image_path=image_path,
        labels=labels,
        segment_ids=segment_ids,
        segment_boxes=segment_boxes,
        source=source,
        meta={"skipped_words": skipped, "image_id": meta.get("image_id"), "cord_split": meta.get("split"),
              "group_ids": group_ids},
    )


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


def _read_json_folder(json_dir: Path, image_dir: Path, missing: list[str], policy=None) -> list[Document]:
    docs = []
    files = sorted(json_dir.glob("*.json"))
    count_given(policy, len(files))
    for json_file in files:
        doc = guarded(policy, lambda f=json_file: _read_json_file(f, image_dir, missing), json_dir.parent.name,
                      json_file.stem, str(json_file))
        if doc is not None:
            docs.append(doc)
    if not docs:
        raise DataError("no receipt_*.json annotation files in this folder", json_dir, "json")
    return docs


def carve_out(docs: list[Document], eval_fraction: float, seed: int) -> dict[str, list[Document]]:
    """Split one pool into ``train``/``test`` reproducibly with :func:`~aetnet.tasks.splits.carve_out_eval`
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
        policy: a :class:`aetnet.data.screen.BadDocuments`; with ``skip`` a malformed file or row is
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
    if missing:
        total = sum(len(docs) for docs in splits.values())
        logger.warning(
            "%d of %d CORD annotations under %s have no image (looked for %s beside json/ in image/); "
            "they are read as blank pages, text and layout only. First: %s",
            len(missing), total, path, "/".join(_IMAGE_SUFFIXES), missing[0],
        )
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

    def load(self, cfg: RunConfig, demo: bool = False) -> dict[str, list[Document]]:
        if demo:
            from aetnet.data.demo import ensure_demo

            path = str(ensure_demo("cord"))
        elif cfg.data.path:
            path = cfg.data.path
        else:
            path = "naver-clova-ix/cord-v2"  # the hub copy (online only); the reader explains offline
        splits = map_splits(read_cord(path, cfg.data.eval_fraction, cfg.train.seed, self.bad_documents), EVAL_SPLITS,
                            cfg.data.eval_fraction, cfg.train.seed, f"CORD {path}")
        for docs in splits.values():
            self.check_labels(docs)
            for doc in docs:  # one entity per annotated line, counted by `aetnet inspect`
                doc.meta["entities"] = sum(1 for label in doc.labels or [] if label.startswith("B-"))
        return splits
