"""FUNSD: form understanding as BIO word labelling over question / answer / header.

Reads the original release (``training_data/`` and ``testing_data/``, each with ``annotations/*.json``
and ``images/*.png``; the folder itself or a parent holding ``dataset/``) and the Hugging Face
``nielsr/funsd-layoutlmv3`` schema (a ``save_to_disk`` folder, or a hub id when online).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from aetnet.config import RunConfig
from aetnet.data.document import Document
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


def parse_funsd_annotation(path: Path, image_path: Path | None) -> Document:
    """One FUNSD annotation file -> a :class:`Document` with BIO labels, segments and links."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError("file is not UTF-8 text; re-save it as UTF-8 JSON", path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at line {exc.lineno} ({exc.msg}); fix or re-export the file", path) from None
    if not isinstance(data, dict) or "form" not in data:
        raise DataError("missing the top-level 'form' list of entities", path, "form")
    words, boxes, labels, segments = [], [], [], []
    segment_boxes: dict[int, list[float]] = {}
    links: set[tuple[int, int]] = set()
    empty_entities = skipped_words = 0
    for n, entity in enumerate(data["form"]):
        for key in ("id", "label", "words"):
            if key not in entity:
                raise DataError(f"entity {n} has no '{key}'", path, f"form[{n}].{key}")
        label = str(entity["label"]).lower()
        if label not in ENTITY_TYPES:
            raise DataError(
                f"entity {n} has unknown label '{entity['label']}'; valid labels are "
                "question, answer, header, other",
                path,
                f"form[{n}].label",
            )
        ent_id = int(entity["id"])
        if "box" in entity:
            segment_boxes[ent_id] = [float(v) for v in entity["box"]]
        for pair in entity.get("linking", []):
            links.add((int(pair[0]), int(pair[1])))
        ent_words = [w for w in entity["words"] if str(w.get("text", "")).strip()]
        skipped_words += len(entity["words"]) - len(ent_words)
        if not ent_words:
            empty_entities += 1
            continue
        kind = ENTITY_TYPES[label]
        for i, word in enumerate(ent_words):
            if "box" not in word:
                raise DataError(f"a word of entity {n} has no box", path, f"form[{n}].words.box")
            words.append(str(word["text"]).strip())
            boxes.append(word["box"])
            labels.append("O" if kind is None else f"{'B' if i == 0 else 'I'}-{kind}")
            segments.append(ent_id)
    size = _image_size(image_path, boxes, path)
    return Document(
        id=path.stem,
        words=words,
        boxes=boxes,
        page_size=size,
        image_path=image_path,
        labels=labels,
        segment_ids=segments,
        segment_boxes=segment_boxes,
        links=sorted(links),
        source=str(path),
        meta={"entities": len(data["form"]), "empty_entities": empty_entities, "skipped_words": skipped_words},
    )


def _image_size(image_path: Path | None, boxes: list, source: Path) -> tuple[int, int]:
    if image_path is not None:
        from aetnet.data.images import image_size

        return image_size(image_path)
    raise DataError(
        "no page image found beside the annotation; put it in images/ with the same file stem",
        source,
        "image",
    )


def read_funsd_folder(root: Path, policy=None) -> dict[str, list[Document]]:
    """Read both splits of an original-layout FUNSD folder.

    Args:
        root: the folder holding ``training_data/`` and ``testing_data/``.
        policy: a :class:`aetnet.data.screen.BadDocuments` deciding whether a broken annotation
            stops the read or is skipped and recorded; ``None`` raises.
    """
    splits: dict[str, list[Document]] = {}
    for split, folder in SPLIT_FOLDERS.items():
        ann_dir = root / folder / "annotations"
        if not ann_dir.is_dir():
            splits[split] = []
            continue
        docs = []
        for ann in sorted(ann_dir.glob("*.json")):
            image = next((p for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff")
                          if (p := root / folder / "images" / (ann.stem + ext)).is_file()), None)
            if policy is None:
                docs.append(parse_funsd_annotation(ann, image))
            elif (doc := policy.run(lambda a=ann, i=image: parse_funsd_annotation(a, i), split, ann.stem,
                                    str(ann))) is not None:
                docs.append(doc)
        splits[split] = docs
        skipped = sum(d.meta["skipped_words"] for d in docs)
        if skipped:
            logger.info("%s/%s: %d words with empty text skipped (kept in each document's meta)",
                        root, folder, skipped)
    if not splits["train"] and not splits["eval"]:
        raise AetnetError(f"{root}: no annotations/*.json found in training_data/ or testing_data/")
    return splits


def read_funsd_hf(dataset_or_path: Any) -> dict[str, list[Document]]:
    """Read the ``nielsr/funsd-layoutlmv3`` schema: ``id``, ``tokens``, ``bboxes`` (0-1000),
    ``ner_tags``, ``image``; from a DatasetDict, a ``save_to_disk`` folder or a hub id."""
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
        docs = []
        for row_index, row in enumerate(part):
            image = row["image"].convert("RGB")
            width, height = image.size
            # The hub copy stores boxes already on 0-1000; back to pixels so one code path normalises.
            # Half a unit in keeps int(1000 * x / width) at the stored value despite float error.
            boxes = [[(b[0] + 0.5) * width / 1000, (b[1] + 0.5) * height / 1000, (b[2] + 0.5) * width / 1000,
                      (b[3] + 0.5) * height / 1000] for b in row["bboxes"]]
            docs.append(
                Document(
                    id=str(row.get("id", row_index)),
                    words=row["tokens"],
                    boxes=boxes,
                    page_size=(width, height),
                    image=image,
                    labels=[names[t] for t in row["ner_tags"]],
                    source=f"{dataset_or_path}[{split_name}][{row_index}]",
                    meta={"entities": sum(1 for t in row["ner_tags"] if names[t].startswith("B-"))},
                )
            )
        splits.setdefault(key, []).extend(docs)
    if names != FUNSD_LABELS:
        logger.info("dataset label order %s differs from FUNSD_LABELS; labels are mapped by name", names)
    return splits


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
        return read_funsd_hf(p)
    if p.exists():
        return read_funsd_folder(find_funsd_root(p), policy)
    if "/" in str(path) and not str(path).startswith((".", "/")):
        return read_funsd_hf(path)
    raise AetnetError(f"{path}: FUNSD folder does not exist; pass --data to a FUNSD release folder")


@TASKS.register("funsd")
class FunsdTask(TokenClassificationTask):
    """FUNSD entity labelling (question, answer, header), seqeval entity F1."""

    name = "funsd"
    labels = FUNSD_LABELS

    def load(self, cfg: RunConfig, demo: bool = False) -> dict[str, list[Document]]:
        if demo:
            from aetnet.data.demo import ensure_demo

            path = str(ensure_demo("funsd"))
        else:
            path = cfg.data.path
        splits = load_funsd(path, self.bad_documents)
        for docs in splits.values():
            self.check_labels(docs)
        return splits
