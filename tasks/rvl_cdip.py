"""RVL-CDIP (Harley et al., 2015): page classification into 16 classes, words from Tesseract.

Label files (:mod:`aetnet.tasks.rvl_cdip_labels`) list ``path/to/image.tif <class id>`` per line. In
the official release they are ``labels/{train,val,test}.txt`` with images under ``images/`` beside
``labels/``; the splits keep those stems (``train``, ``val``, ``test``). Any other label file is one
split named by its stem.
The Hugging Face ``aharley/rvl_cdip`` schema (``image``, ``label`` columns) is read from a
``save_to_disk`` folder. RVL-CDIP ships no words, so every page goes through the cached OCR;
:func:`list_rvl_cdip` lists pages without OCR so that callers recognise only the pages they use.

:class:`RvlCdipTask` (``rvl-cdip``) classifies a page from its first ``max_length`` tokens and its
image; it reports accuracy, macro-F1 and a confusion matrix (CSV and PNG in the run folder).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aetnet.config.settings import RunConfig, reads_validation
from aetnet.data.documents.document import Document
from aetnet.data.documents.page_refs import DatasetRow
from aetnet.data.documents.screen import BadDocuments, count_given, guarded
from aetnet.data.documents.splits import Splits, map_splits
from aetnet.data.documents.stream import DocumentStream
from aetnet.data.documents.validate import DEFAULT_FIX, expect_integer
from aetnet.data.ocr.images import image_size
from aetnet.data.ocr.pool import PageOcr, iter_ocr
from aetnet.data.ocr.tesseract import OcrSettings
from aetnet.errors import AetnetError, DataError
from aetnet.registry import TASKS
from aetnet.tasks.base import ClassScorer, SequenceClassificationTask
from aetnet.tasks.rvl_cdip_labels import RVL_CDIP_CLASSES, find_image_root, find_label_files, parse_label_file

logger = logging.getLogger(__name__)

@dataclass(slots=True)
class PageEntry:
    """One listed page, before OCR: where its pixels are and its class.

    A listed split keeps one entry per page for the whole run (RVL-CDIP's training split has 320,000), so
    an entry keeps plain strings in slots (about 0.3 KB with its strings; a ``Path`` and an instance
    dictionary would add about 0.4 KB) and the entries of one label file share its name.

    Attributes:
        doc_id: the label file's relative path, or ``<split>_<row>`` for Hugging Face rows.
        label: the official class id (0-15).
        source: the label file or dataset row, named in errors.
        image_file: the page file (label files; kept as text, :attr:`image_path` gives it as a ``Path``).
        image_ref: the undecoded Hugging Face row (``save_to_disk`` folders).
    """

    doc_id: str
    label: int
    source: str
    image_file: str | None = None
    image_ref: DatasetRow | None = None

    @property
    def image_path(self) -> Path | None:
        """The page file (label files)."""
        return None if self.image_file is None else Path(self.image_file)

    def page(self) -> Path | DatasetRow:
        """The page to recognise: the file, or the dataset row (read when needed, never kept decoded)."""
        if self.image_file is not None:
            return Path(self.image_file)
        if self.image_ref is None:
            raise DataError("page has neither a file nor a dataset row", self.source, "image")
        return self.image_ref


def _page_document(entry: PageEntry, ocr: PageOcr | DataError, settings: OcrSettings) -> Document:
    """The document of a recognised page (its words, class and a reference to its pixels)."""
    if isinstance(ocr, DataError):
        raise ocr
    page = entry.page()
    size = image_size(page) if isinstance(page, Path) else page.size()
    return Document(
        id=entry.doc_id,
        words=ocr.words,
        boxes=ocr.boxes,
        page_size=size,
        image_path=entry.image_path,
        image_ref=entry.image_ref,
        doc_label=RVL_CDIP_CLASSES[entry.label],
        source=entry.source,
        meta={"label_id": entry.label, "ocr": settings.as_dict()},
    )


def _hf_label(label: Any, source: str) -> int:
    """A row's class id, checked to be an integer in 0-15."""
    label = expect_integer(label, "label", source)
    if not 0 <= label < len(RVL_CDIP_CLASSES):
        raise DataError(f"class id {label} is not in 0-{len(RVL_CDIP_CLASSES) - 1}; {DEFAULT_FIX}", source, "label")
    return label


def _list_hf(path: Path, splits: Sequence[str] | None, policy=None) -> dict[str, list[PageEntry]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    single = isinstance(loaded, datasets.Dataset)
    if single:
        loaded = {"train": loaded}
    out: dict[str, list[PageEntry]] = {}
    for name in _select(list(loaded), splits, path):
        split = loaded[name]
        missing = [c for c in ("image", "label") if c not in split.column_names]
        if missing:
            raise DataError(f"split '{name}' lacks column(s) {missing} of the aharley/rvl_cdip schema",
                            path, missing[0])
        # Listing reads the label column only; a page's bytes are read when it is OCR'd or batched.
        labels = split["label"]
        count_given(policy, len(labels))
        entries = []
        for i, label in enumerate(labels):
            source = f"{path}[{name}][{i}]"
            doc_id = f"{name}_{i:06d}"
            ref = DatasetRow(str(path), None if single else name, i)
            entry = guarded(policy, lambda label=label, s=source, k=doc_id, r=ref: PageEntry(
                k, _hf_label(label, s), s, image_ref=r), name, doc_id, source)
            if entry is not None:
                entries.append(entry)
        out[name] = entries
    return out


def _select(available: list[str], wanted: Sequence[str] | None, where: Path) -> list[str]:
    if wanted is None:
        return available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise DataError(f"split(s) {unknown} not found; available: {available}", where, "splits")
    return list(wanted)


def list_rvl_cdip(
    path: str | Path,
    image_root: str | Path | None = None,
    splits: Sequence[str] | None = None,
    policy=None,
) -> dict[str, list[PageEntry]]:
    """Every page of every split with its class, checked to exist, without running any OCR.

    Listing first lets a caller choose pages (a carve-out, the first N) before the slow part, and
    lets a typo in a label file fail in a second rather than after hours of OCR.

    Args:
        path: as for :func:`read_rvl_cdip`.
        image_root: as for :func:`read_rvl_cdip`.
        splits: list only these splits.
        policy: a :class:`aetnet.data.documents.screen.BadDocuments`; with ``skip`` every bad label line (or
            row) and every line naming a missing image is recorded and left out; ``None`` raises.

    Returns:
        ``{split: entries}`` in label-file (or dataset) order.

    Raises:
        DataError: a malformed label line, a missing image, a missing split.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError("does not exist; pass the RVL-CDIP folder, its labels/ folder or a label file", path)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        return _list_hf(path, splits, policy)

    files, labels_dir = find_label_files(path)
    chosen = _select(list(files), splits, labels_dir)
    parsed = {name: parse_label_file(files[name], policy, name) for name in chosen}
    out: dict[str, list[PageEntry]] = {}
    for name, rows in parsed.items():
        if not rows:
            logger.warning("RVL-CDIP label file %s lists no usable image; split '%s' is empty", files[name], name)
            out[name] = []
            continue
        root = Path(image_root).expanduser() if image_root else find_image_root(rows, labels_dir, files[name])
        label_file, out[name] = files[name], []
        source = str(label_file)  # one string for the file's entries
        for rel, label, number in rows:
            entry = guarded(policy, lambda r=rel, c=label, n=number, d=root, f=label_file, s=source:
                            _listed_page(d, r, c, n, f, s), name, f"{label_file.name}:{number}", source)
            if entry is not None:
                out[name].append(entry)
    return out


def _listed_page(root: Path, rel: str, label: int, number: int, label_file: Path, source: str) -> PageEntry:
    """The entry of one label line, its image checked to exist (``source``: the label file's name as text)."""
    image_path = root / rel
    if not image_path.is_file():
        raise DataError(f"image '{image_path}' does not exist; check image_root or the line", label_file,
                        f"line {number}")
    return PageEntry(rel, label, source, image_file=str(image_path))


def ocr_pages(
    entries: Sequence[PageEntry], ocr: OcrSettings | None = None, cache_dir: str | Path | None = None,
    policy=None, split: str = "", workers: int | None = 1,
) -> list[Document]:
    """Recognise listed pages (cached, ``workers`` processes) into documents with their class.

    Bad pages are handed to ``policy`` in listing order, whatever the number of workers.

    Args:
        entries: pages from :func:`list_rvl_cdip`.
        ocr: Tesseract settings; default :class:`OcrSettings` ().
        cache_dir: the OCR cache folder (see :mod:`aetnet.data.ocr.tesseract`).
        policy: the ``--on-bad-document`` policy (``None``: errors propagate).
        split: the split name, for skipped-document records.
        workers: OCR processes (``None``/``0``: every core; ``1``: this process).
    """
    return list(iter_ocr_pages(entries, ocr, cache_dir, policy, split, workers))


def iter_ocr_pages(
    entries: Sequence[PageEntry], ocr: OcrSettings | None = None, cache_dir: str | Path | None = None,
    policy=None, split: str = "", workers: int | None = 1,
) -> Iterator[Document]:
    """:func:`ocr_pages` as a stream: each page's document as its OCR result comes (from the cache or
    Tesseract), one at a time; bad pages go to ``policy`` in listing order."""
    settings = ocr or OcrSettings()
    results = iter_ocr(_PagesOf(entries), settings, cache_dir, workers, desc=f"OCR {split}".strip())
    try:
        for entry, result in zip(entries, results):
            doc = guarded(policy, lambda e=entry, r=result: _page_document(e, r, settings), split, entry.doc_id,
                          entry.source)
            if doc is not None:
                yield doc
    finally:  # a bad page's error (or a reader that stops early) closes the progress bar and the pool first
        results.close()


class _PagesOf(Sequence):
    """The pages of listed entries, made on access (no second list as long as the split)."""

    def __init__(self, entries: Sequence[PageEntry]):
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [e.page() for e in self.entries[i]]
        return self.entries[i].page()


def read_rvl_cdip(
    path: str | Path,
    image_root: str | Path | None = None,
    ocr: OcrSettings | None = None,
    cache_dir: str | Path | None = None,
    splits: Sequence[str] | None = None,
    workers: int | None = 1,
) -> dict[str, list[Document]]:
    """Read RVL-CDIP pages with their class and their OCR words.

    Args:
        path: the dataset folder (holding ``labels/``), the labels folder, one label file, or a
            ``save_to_disk`` folder of the ``aharley/rvl_cdip`` schema.
        image_root: the folder label paths are relative to; default ``images/`` beside
            ``labels/`` when the first listed image is there, else the folder holding ``labels/``.
        ocr: Tesseract settings; default :class:`OcrSettings` ().
        cache_dir: the OCR cache folder (see :mod:`aetnet.data.ocr.tesseract`).
        splits: read only these splits (e.g. ``["test"]``).
        workers: OCR processes for pages not yet cached (``None``/``0``: every core).

    Returns:
        ``{split: documents}``, each with ``doc_label`` (a class name of :data:`RVL_CDIP_CLASSES`)
        and ``meta["label_id"]``.

    Raises:
        DataError: a malformed label line (file and line number), a missing or unreadable image.
        AetnetError: Tesseract or its language pack is missing.
    """
    out: dict[str, list[Document]] = {}
    for name, entries in list_rvl_cdip(path, image_root, splits).items():
        out[name] = ocr_pages(entries, ocr, cache_dir, workers=workers)
        logger.info("RVL-CDIP %s: %d pages read from %s", name, len(entries), path)
    return out


#: Reader split names that serve as evaluation, in order of preference (official, then HF names).
EVAL_SPLITS = ("test", "val", "validation")


@TASKS.register("rvl-cdip")
class RvlCdipTask(SequenceClassificationTask):
    """RVL-CDIP page classification over the 16 official classes (ids as in the release).

    Splits: ``train`` trains; evaluation is ``test`` when present, else ``val``/``validation``;
    a dataset with a single label file (or a single Hugging Face split) is split with
    ``data.eval_fraction`` and ``train.seed`` (:func:`aetnet.data.documents.splits.carve_out_eval`). Pages
    are listed first and only the pages the run uses (after ``data.max_train_documents`` /
    ``data.max_eval_documents``) go through OCR, with ``data.ocr_lang`` / ``data.ocr_psm``.
    """

    name = "rvl-cdip"
    labels = list(RVL_CDIP_CLASSES)

    def _path(self, cfg: RunConfig, demo: bool) -> str:
        if demo:
            from aetnet.data.demo import ensure_demo

            return str(ensure_demo("rvl-cdip"))
        if cfg.data.path:
            return cfg.data.path
        raise AetnetError("RVL-CDIP cannot be downloaded automatically; pass --data PATH to a folder "
                          "holding labels/ and images/ (or a save_to_disk folder), or --demo")

    def pages_to_recognise(self, cfg: RunConfig, demo: bool = False) -> list[tuple[str, Any]]:
        """Every listed page of every split (RVL-CDIP ships no words)."""
        listed = list_rvl_cdip(self._path(cfg, demo))
        return [(f"{split}/{e.doc_id}", e.page()) for split, entries in listed.items() for e in entries]

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        path = self._path(cfg, demo)
        entries = map_splits(list_rvl_cdip(path, policy=bad_documents), EVAL_SPLITS, cfg.data.eval_fraction,
                             cfg.train.seed, f"RVL-CDIP {path}", group=lambda e: e.doc_id)
        settings = OcrSettings(lang=cfg.data.ocr_lang, psm=cfg.data.ocr_psm)
        limits = {"train": cfg.data.max_train_documents, "eval": cfg.data.max_eval_documents,
                  "validation": cfg.data.max_eval_documents}
        splits = Splits(eval_split=entries.eval_split)
        for name, chosen in entries.items():
            if name == "validation" and not reads_validation(cfg):
                continue  # no OCR for pages the run does not score
            if limits[name] is not None:
                chosen = chosen[: limits[name]]
            if name == "train":  # read on demand, never held whole (the largest split by far)
                splits[name] = DocumentStream(
                    lambda policy, chosen=chosen, name=name: iter_ocr_pages(chosen, settings, policy=policy,
                                                                             split=name, workers=cfg.data.ocr_workers),
                    name, bad_documents, cfg.data.box_level).scan()
            else:
                splits[name] = ocr_pages(chosen, settings, policy=bad_documents, split=name,
                                         workers=cfg.data.ocr_workers)
            logger.info("RVL-CDIP %s: %d pages (OCR lang=%s psm=%d)", name, len(chosen), settings.lang,
                        settings.psm)
        return splits

    def scorer(self, id2label: dict[int, str]) -> ClassScorer:
        return OcrClassScorer(id2label, self.score)


class OcrClassScorer(ClassScorer):
    """:class:`ClassScorer` whose metrics also name the OCR settings the words came from (``ocr``, those of
    the first page): scores are only comparable under the same settings."""

    def __init__(self, id2label: dict[int, str], score) -> None:
        super().__init__(id2label, score)
        self.ocr: Any = None
        self.first = True

    def add(self, example, windows, outputs):
        if self.first:
            self.ocr, self.first = example.meta.get("ocr"), False
        return super().add(example, windows, outputs)

    def metrics(self):
        return {**super().metrics(), "ocr": self.ocr}
