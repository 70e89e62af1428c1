"""Your own documents: ``token``, ``classify`` and ``qa`` tasks with any label set.

Data (``--data``) is one of:

- the aetnet page format (:mod:`aetnet.data.documents.pages`): a ``pages.jsonl`` file, or a folder of
  ``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl``;
- (``token``) a folder in the FUNSD layout (``training_data``/``testing_data`` with ``annotations/*.json``
  and ``images/``) with any entity labels (``other`` is outside);
- (``token``) a ``save_to_disk`` dataset with ``words`` (or ``tokens``), ``bboxes`` (0-1000, as the
  Hugging Face LayoutLMv3 datasets store them), ``ner_tags`` (a ``ClassLabel`` sequence, whose names
  are the labels) and ``image``.

The label set is discovered from the training split (``O`` first, then ``B-``/``I-`` per entity
type in name order; classes in name order) unless ``data.labels`` fixes it; it is saved with the
model. A label of the evaluation split that the training split lacks is an error naming the page.
Splits come from the files (``test`` is evaluated, else ``validation``) or are carved out of a
single pool by page (``data.eval_fraction``, ``train.seed``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import Document
from aetnet.data.documents.page_checks import tag_scheme
from aetnet.data.documents.page_targets import is_bio
from aetnet.data.documents.pages import list_pages, read_pages
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.documents.splits import map_splits
from aetnet.data.documents.stream import stream_training
from aetnet.errors import AetnetError
from aetnet.registry import TASKS
from aetnet.tasks.base import QuestionAnsweringTask, SequenceClassificationTask, TokenClassificationTask

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("test", "validation")


def bio_label_list(names: list[str]) -> list[str]:
    """``data.labels`` or discovered entity names -> the BIO label list (``O``, ``B-X``, ``I-X``, ...)."""
    if is_bio(names):
        return ["O", *[n for n in names if n != "O"]] if "O" in names else ["O", *names]
    try:
        tagged = tag_scheme(names)
    except ValueError as exc:
        raise AetnetError(f"data.labels {exc}; give entity types (KEY,VALUE) or BIO tags") from None
    # BIOES / BILOU tags name their types as the pages' tags do (converted to BIO on reading)
    types = list(dict.fromkeys(n[2:] if tagged else n for n in names if n != "O"))
    return ["O", *[f"{p}-{t}" for t in types for p in ("B", "I")]]


def _is_funsd_layout(path: Path) -> bool:
    return any((p / "training_data").is_dir() or (p / "testing_data").is_dir() for p in (path, path / "dataset")) \
        or (path / "annotations").is_dir()


def _is_hf_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()


def _pages_without_words(path: str | Path) -> list[Path]:
    """Existing images of the page lines that give no ``words`` (what :func:`read_pages` sends to OCR)."""
    from aetnet.data.documents.pages import find_page_files, iter_page_lines

    found: dict[Path, None] = {}
    for file in find_page_files(path).values():
        for _, record in iter_page_lines(file):
            image = record.get("image") if isinstance(record, dict) and record.get("words") is None else None
            if isinstance(image, str) and image.strip():
                image_path = Path(image) if Path(image).is_absolute() else file.parent / image
                if image_path.is_file():
                    found.setdefault(image_path)
    return list(found)


class _FoundLabels:
    """A task whose label set :meth:`load` fixes from the data (or ``data.labels``)."""

    labels: list[str]

    def data_state(self) -> dict[str, Any]:
        """The label set :meth:`load` fixed."""
        return {"labels": list(self.labels)}

    def adopt_data_state(self, state: dict[str, Any]) -> None:
        self.labels = list(state["labels"])


class _OwnData:
    """What the generic tasks (and ``re``) share: reading pages, mapping splits, fixing the label set."""

    #: The demo to suggest when ``--demo`` is asked of a task that has none.
    demo_hint = "aetnet finetune funsd --demo"
    #: What the pages must carry, for the message when ``--data`` is missing.
    pages_hint = ""

    def _read(self, cfg: RunConfig, demo: bool, bad_documents: BadDocuments | None,
              kind: str | None = None) -> dict[str, list]:
        """The pages of ``--data`` per split, with targets of ``kind`` (default: the task's kind)."""
        return read_pages(cfg.data.path, kind or self.kind, bad_documents, ocr=self._page_ocr(cfg, demo))

    def _list(self, cfg: RunConfig, demo: bool, bad_documents: BadDocuments | None) -> dict[str, list]:
        """:meth:`_read` as one :class:`~aetnet.data.documents.stream.DocumentRef` per page (pages, not questions)."""
        return list_pages(cfg.data.path, self.kind, bad_documents, ocr=self._page_ocr(cfg, demo))

    def _page_ocr(self, cfg: RunConfig, demo: bool):
        """The OCR function for pages without words (the OCR cache filled first in parallel)."""
        if demo:
            raise AetnetError(f"task '{self.name}' has no demo; pass --data to your pages (see `aetnet formats "
                              f"show pages`) or run `{self.demo_hint}`")
        if not cfg.data.path:
            raise AetnetError(f"task '{self.name}' needs --data: a pages .jsonl file, a folder of train/validation/"
                              "test .jsonl files" + (", or a save_to_disk dataset" if self.kind == "token" else "")
                              + self.pages_hint)
        from aetnet.data.ocr.tesseract import OcrSettings, ocr_with

        settings = OcrSettings(lang=cfg.data.ocr_lang, psm=cfg.data.ocr_psm)
        if cfg.data.ocr_workers != 1:
            from aetnet.data.ocr.pool import ocr_many

            # Fill the OCR cache in parallel; reading then finds every page cached (a bad one fails there).
            ocr_many(_pages_without_words(cfg.data.path), settings, workers=cfg.data.ocr_workers, desc="OCR pages")
        return lambda image: ocr_with(image, settings)

    def pages_to_recognise(self, cfg: RunConfig, demo: bool = False) -> list[tuple[str, Any]]:
        """The images of the pages that give no ``words`` (they are read with Tesseract)."""
        if not cfg.data.path or _is_hf_folder(Path(cfg.data.path)):
            raise AetnetError(f"task '{self.name}': aetnet ocr reads pages .jsonl files; pass --data to them")
        return [(str(path), path) for path in _pages_without_words(cfg.data.path)]

    def _map(self, raw: dict[str, list], cfg: RunConfig, group=lambda x: str(x.id)) -> dict[str, list]:
        if "all" in raw:
            raw = {"train": raw.pop("all")}
        elif not raw.get("train"):
            # Split files are the user's split: never carve training pages out of validation or test.
            state = "has no usable page" if "train" in raw else "is missing"
            raise AetnetError(f"{cfg.data.path}: train.jsonl {state} beside "
                              f"{', '.join(f'{n}.jsonl' for n in raw if n != 'train')}; put the training pages in "
                              "train.jsonl (or pass one pages file to have the evaluation share carved out of it)")
        return map_splits(raw, EVAL_SPLITS, cfg.data.eval_fraction, cfg.train.seed, str(cfg.data.path), group)

    def _fix_labels(self, splits: dict[str, list], cfg: RunConfig, discovered: list[str],
                    bad_documents: BadDocuments | None, listed: bool = False) -> None:
        """Fix the label set and keep the examples with known labels; ``listed``: the splits hold
        :class:`~aetnet.data.documents.stream.DocumentRef` (from :meth:`_list`) and training streams from them."""
        self.labels = self._label_set(cfg.data.labels) if cfg.data.labels else discovered
        if len(self.labels) < (2 if self.kind == "sequence" else 1):
            raise AetnetError(f"{cfg.data.path}: the training split has {len(self.labels)} label(s); a "
                              f"{self.name} task needs at least two (check the pages' targets)")
        if listed:
            stream_training(self, splits, cfg.data.max_train_documents, cfg.data.box_level, bad_documents)
            return
        for split in list(splits):
            splits[split] = self.keep_known_labels(splits[split], split, bad_documents)

    def _label_set(self, names: list[str]) -> list[str]:
        return list(names)


@TASKS.register("token")
class OwnTokenTask(_FoundLabels, _OwnData, TokenClassificationTask):
    """Word labelling with your label set (BIO over entity types), seqeval entity F1."""

    name = "token"

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        path = Path(cfg.data.path) if cfg.data.path else None
        if path is not None and path.is_dir() and _is_hf_folder(path):
            splits, names = _read_hf_token(path, bad_documents)
        elif path is not None and path.is_dir() and _is_funsd_layout(path):
            from aetnet.tasks.funsd import find_funsd_root, read_funsd_folder

            raw = read_funsd_folder(find_funsd_root(path), bad_documents, any_label=True)
            splits, names = self._map({"train": raw["train"], "test": raw["eval"]}, cfg), None
        else:  # pages files: training streams from its lines (one page read at a time)
            splits = self._map(self._list(cfg, demo, bad_documents), cfg)
            train_types = sorted({lb[2:] for ref in splits["train"] for lb in (ref.read().labels or []) if lb != "O"})
            self._fix_labels(splits, cfg, bio_label_list(train_types), bad_documents,
                             listed=True)
            return splits
        train_types = sorted({lb[2:] for d in splits["train"] for lb in (d.labels or []) if lb != "O"})
        self._fix_labels(splits, cfg, names or bio_label_list(train_types), bad_documents)
        return splits

    def _label_set(self, names: list[str]) -> list[str]:
        return bio_label_list(names)


@TASKS.register("classify")
class OwnClassifyTask(_FoundLabels, _OwnData, SequenceClassificationTask):
    """Page classification into your classes; accuracy and macro-F1."""

    name = "classify"

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        splits = self._map(self._list(cfg, demo, bad_documents), cfg)  # training streams from its lines
        self._fix_labels(splits, cfg, sorted({ref.read().doc_label for ref in splits["train"]}), bad_documents,
                         listed=True)
        return splits


@TASKS.register("qa")
class OwnQaTask(_OwnData, QuestionAnsweringTask):
    """Extractive question answering on your pages; ANLS and exact match."""

    name = "qa"

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list]:
        if cfg.data.labels:
            raise AetnetError("data.labels does not apply to the qa task (answers are spans); remove it")
        # All questions about one page stay on one side of a carved split.
        return self._map(self._read(cfg, demo, bad_documents), cfg, group=lambda ex: str(ex.document.id))


def _read_hf_token(path: Path, policy=None) -> tuple[dict[str, list[Document]], list[str]]:
    """A ``save_to_disk`` token dataset: the FUNSD Hugging Face reader, with ``words`` accepted for ``tokens``."""
    import datasets

    from aetnet.tasks.funsd import read_funsd_hf

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    ds = datasets.DatasetDict({name: (part.rename_column("words", "tokens") if "words" in part.column_names
                                      and "tokens" not in part.column_names else part)
                               for name, part in ds.items()})
    first = next(iter(ds.values()))
    feature = first.features.get("ner_tags")
    names = list(getattr(getattr(feature, "feature", None), "names", []) or [])
    if not names:
        raise AetnetError(f"{path}: column 'ner_tags' is not a sequence of ClassLabel; store the label names "
                          "with datasets.Sequence(datasets.ClassLabel(names=[...]))")
    return read_funsd_hf(ds, policy), names  # --on-bad-document applies per row, as for funsd
