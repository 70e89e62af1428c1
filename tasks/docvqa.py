"""DocVQA (Mathew et al., 2021): extractive question answering on document pages.

The official JSON holds ``dataset_split`` and ``data[]`` entries with ``questionId``, ``question``,
``image`` (relative path such as ``documents/xxx.png``), ``docId`` and ``answers`` (absent in the
test split). Words come from the official OCR files (``<ocr_root>/<image stem>.json``, Microsoft
Read format: ``recognitionResults[].lines[].words[]`` with ``text`` and an 8-number
``boundingBox``) when present, from Tesseract otherwise. Every page is recognised once and its
:class:`~aetnet.data.documents.document.Document` shared by all its questions.

Answers are strings; :func:`~aetnet.data.documents.answers.locate_answer` finds their word span. A question
whose answer cannot be located is kept with ``answer_span=None`` (training targets ``<s>``, evaluation
still scores it with ANLS) and counted in :func:`docvqa_summary`, which is logged.

:class:`DocVqaTask` (``docvqa``) trains on ``train`` and evaluates on ``val`` with ANLS.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from aetnet.config.settings import RunConfig
from aetnet.data.documents.answers import locate_answer
from aetnet.data.documents.document import Box, Document, QAExample
from aetnet.data.documents.screen import BadDocuments, count_given, guarded
from aetnet.data.documents.splits import map_splits
from aetnet.data.documents.stream import DocumentStream
from aetnet.data.documents.validate import DEFAULT_FIX, expect_box, expect_object, expect_text, read_json, require
from aetnet.data.ocr.images import image_size
from aetnet.data.ocr.pool import ocr_many
from aetnet.data.ocr.tesseract import OcrSettings, ocr_with
from aetnet.errors import AetnetError, DataError
from aetnet.registry import TASKS
from aetnet.tasks.base import AnswerScorer, QuestionAnsweringTask

logger = logging.getLogger(__name__)


def read_official_ocr(ocr_file: Path) -> tuple[list[str], list[Box], tuple[int, int] | None]:
    """Words, axis-aligned pixel boxes and page size from a DocVQA (Microsoft Read) OCR file.

    Returns:
        ``(words, boxes, size)``: boxes ``[x0, y0, x1, y1]`` are the min/max of the 8-number
        polygon; ``size`` is the first result's ``(width, height)`` or ``None``.

    Raises:
        DataError: the file is not in that format.
    """
    record = expect_object(read_json(ocr_file, "the DocVQA OCR file"), "", ocr_file)
    results = require(record, "recognitionResults", "list", "", ocr_file, fix="is this a DocVQA OCR file?")
    words: list[str] = []
    boxes: list[Box] = []
    size = None
    for r, raw in enumerate(results):
        where = f"recognitionResults[{r}]"
        result = expect_object(raw, where, ocr_file)
        width = require(result, "width", "number", where, ocr_file, optional=True)
        height = require(result, "height", "number", where, ocr_file, optional=True)
        if size is None and width and height:
            size = (int(round(width)), int(round(height)))
        for li, raw_line in enumerate(require(result, "lines", "list", where, ocr_file, optional=True, default=[])):
            line_at = f"{where}.lines[{li}]"
            line = expect_object(raw_line, line_at, ocr_file)
            for wi, raw_word in enumerate(require(line, "words", "list", line_at, ocr_file, optional=True, default=[])):
                word_at = f"{line_at}.words[{wi}]"
                word = expect_object(raw_word, word_at, ocr_file)
                text = require(word, "text", "text", word_at, ocr_file).strip()
                poly = expect_box(require(word, "boundingBox", "list", word_at, ocr_file), f"{word_at}.boundingBox",
                                  ocr_file, size=8)
                if not text:
                    continue
                words.append(text)
                boxes.append([min(poly[0::2]), min(poly[1::2]), max(poly[0::2]), max(poly[1::2])])
    return words, boxes, size


def _page_document(
    image_rel: str,
    image_root: Path,
    ocr_root: Path | None,
    settings: OcrSettings,
    cache_dir: str | Path | None,
    json_path: Path,
) -> Document:
    image_path = image_root / image_rel
    stem = Path(image_rel).stem
    ocr_file = ocr_root / f"{stem}.json" if ocr_root is not None else None
    has_image = image_path.is_file()
    if ocr_file is not None and ocr_file.is_file():
        words, boxes, size = read_official_ocr(ocr_file)
        source, meta = str(ocr_file), {"ocr": "official"}
    elif has_image:
        words, boxes = ocr_with(image_path, settings, cache_dir=cache_dir)
        size = None
        source, meta = str(json_path), {"ocr": "tesseract", "ocr_settings": settings.as_dict()}
    else:
        raise DataError(
            f"page image '{image_path}' does not exist and there is no OCR file for it; "
            "pass image_root (the folder holding documents/) or ocr_root",
            json_path,
            "image",
        )
    if has_image:
        size = image_size(image_path)  # header only
    elif size is None:
        raise DataError(
            f"page image '{image_path}' does not exist and the OCR file gives no width/height; "
            "pass image_root (the folder holding documents/)",
            ocr_file,
            "recognitionResults[0].width",
        )
    return Document(
        id=stem,
        words=words,
        boxes=boxes,
        page_size=size,
        image_path=image_path if has_image else None,
        source=source,
        meta=meta,
    )


def docvqa_summary(examples: Sequence[QAExample]) -> dict[str, int]:
    """Counts of ``questions``, ``located`` (answer span found) and ``unlocated`` (kept, span None).

    ``without_answers`` counts the questions with no gold answer at all (the test split); they are
    part of ``unlocated``.
    """
    located = sum(1 for ex in examples if ex.answer_span is not None)
    return {
        "questions": len(examples),
        "located": located,
        "unlocated": len(examples) - located,
        "without_answers": sum(1 for ex in examples if not ex.answers),
    }


def tesseract_pages(data: list, image_root: Path, ocr_root: Path | None) -> list[Path]:
    """The distinct page images of a question list that have no official OCR file (first-seen order)."""
    seen: dict[str, Path] = {}
    for entry in data:
        rel = entry.get("image") if isinstance(entry, dict) else None
        if not rel or str(rel) in seen:
            continue
        path = image_root / str(rel)
        has_ocr = ocr_root is not None and (ocr_root / f"{Path(str(rel)).stem}.json").is_file()
        if not has_ocr and path.is_file():
            seen[str(rel)] = path
    return list(seen.values())


def _question(i: int, raw: Any, json_path: Path, page: Callable[[str, Any], Document],
              fuzzy_threshold: float) -> QAExample:
    """Entry ``i`` of a question file as a :class:`QAExample`; ``page(image, docId)`` gives its page."""
    where = f"data[{i}]"
    entry = expect_object(raw, where, json_path)
    qid = require(entry, "questionId", "text", where, json_path)
    question = require(entry, "question", "string", where, json_path)
    if not question.strip():
        raise DataError(f"entry {i} has an empty question; {DEFAULT_FIX}", json_path, f"{where}.question")
    image_rel = require(entry, "image", "string", where, json_path)
    if not image_rel.strip():
        raise DataError(f"entry {i} names no image; {DEFAULT_FIX}", json_path, f"{where}.image")
    answers = require(entry, "answers", "list", where, json_path, optional=True, default=[])
    answers = [expect_text(a, f"{where}.answers[{k}]", json_path) for k, a in enumerate(answers)]
    doc = page(image_rel, entry.get("docId"))
    return QAExample(
        id=qid,
        question=question,
        document=doc,
        answers=answers,
        answer_span=locate_answer(doc.words, answers, fuzzy_threshold=fuzzy_threshold),
    )


def _questions(data: list, json_path: Path, split: str, page: Callable[[str, Any], Document],
               fuzzy_threshold: float, policy: BadDocuments | None) -> Iterator[QAExample]:
    """The questions of ``data`` in the file's order; a bad entry goes to ``policy`` and is left out."""
    for i, entry in enumerate(data):
        qid = str(entry.get("questionId", i)) if isinstance(entry, dict) else str(i)
        example = guarded(policy, lambda i=i, entry=entry: _question(i, entry, json_path, page, fuzzy_threshold),
                          split, qid, str(json_path))
        if example is not None:
            yield example


def stream_docvqa(json_path: Path, settings: OcrSettings, policy: BadDocuments | None, box_level: str,
                  max_questions: int | None = None, workers: int | None = 1,
                  fuzzy_threshold: float = 0.8) -> DocumentStream:
    """A question file's questions as a scanned :class:`DocumentStream` (the training split): read in the
    file's order, one page's :class:`Document` alive at a time (shared by its consecutive questions; a page
    whose questions are apart is read again, with the same words), the first ``max_questions`` kept. Gives
    the questions, their windows and problems of :func:`read_docvqa` on the same file."""
    record = expect_object(read_json(json_path, "the DocVQA question file"), "", json_path)
    data = require(record, "data", "list", "", json_path, fix="is this a DocVQA v1.0 JSON?")
    split = str(record.get("dataset_split") or json_path.stem)
    image_root = json_path.parent
    ocr_root = json_path.parent / "ocr_results" if (json_path.parent / "ocr_results").is_dir() else None
    if workers != 1:  # fill the OCR cache in parallel once; every pass then reads it
        ocr_many(tesseract_pages(data, image_root, ocr_root), settings, None, workers, desc=f"OCR {split}")

    def read(reading_policy: BadDocuments | None) -> Iterator[QAExample]:
        last: list[Any] = [None, None]  # (image, Document) of the latest page only

        def page(image_rel: str, doc_id: Any) -> Document:
            if last[0] != image_rel:
                doc = _page_document(image_rel, image_root, ocr_root, settings, None, json_path)
                doc.meta["docId"] = doc_id
                last[:] = [image_rel, doc]
            return last[1]

        if reading_policy is policy:  # the scan: the policy's count of what was given, as read_docvqa
            count_given(policy, len(data))
        return islice(_questions(data, json_path, split, page, fuzzy_threshold, reading_policy), max_questions)

    stream = DocumentStream(read, "train", policy, box_level, document=lambda ex: ex.document).scan()
    logger.info("DocVQA %s: %d questions streamed from %s (their pages read one at a time)", split, stream.count,
                json_path)
    return stream


def read_docvqa(
    json_path: str | Path,
    image_root: str | Path | None = None,
    ocr_root: str | Path | None = None,
    ocr: OcrSettings | None = None,
    cache_dir: str | Path | None = None,
    fuzzy_threshold: float = 0.8,
    policy=None,
    workers: int | None = 1,
) -> dict[str, list[QAExample]]:
    """Read an official DocVQA JSON into question/page examples with located answer spans.

    Args:
        json_path: e.g. ``train_v1.0.json``.
        image_root: the folder image paths are relative to; default the JSON's folder.
        ocr_root: the folder of official OCR files; default ``ocr_results/`` beside the JSON when
            it exists. Pages without an OCR file there are recognised with Tesseract.
        ocr: Tesseract settings; default :class:`OcrSettings` ().
        cache_dir: the OCR cache folder (see :mod:`aetnet.data.ocr.tesseract`).
        fuzzy_threshold: minimal similarity for a fuzzy answer match (see ``locate_answer``).
        policy: a :class:`aetnet.data.documents.screen.BadDocuments`; with ``skip`` a broken entry or page is
            recorded and left out instead of stopping the read.
        workers: OCR processes for pages that need Tesseract and are not cached yet (``None``/``0``:
            every core; ``1``: this process).

    Returns:
        ``{split: examples}`` with the split named by ``dataset_split`` (else the file stem), in the
        JSON's order; examples of one page share one ``Document``.

    Raises:
        DataError: the JSON is malformed (names the entry and field) or a page can be neither
            found nor taken from an OCR file.
    """
    json_path = Path(json_path).expanduser()
    record = expect_object(read_json(json_path, "the DocVQA question file"), "", json_path)
    data = require(record, "data", "list", "", json_path, fix="is this a DocVQA v1.0 JSON?")
    split = str(record.get("dataset_split") or json_path.stem)
    image_root = Path(image_root).expanduser() if image_root else json_path.parent
    if ocr_root is None and (json_path.parent / "ocr_results").is_dir():
        ocr_root = json_path.parent / "ocr_results"
    ocr_root = Path(ocr_root).expanduser() if ocr_root is not None else None
    settings = ocr or OcrSettings()

    if workers != 1:
        # Fill the OCR cache in parallel first; the reading below then finds every page cached
        # (a bad page fails again there, in question order, under the policy).
        ocr_many(tesseract_pages(data, image_root, ocr_root), settings, cache_dir, workers, desc=f"OCR {split}")
    count_given(policy, len(data))
    pages: dict[str, Document] = {}

    def page(image_rel: str, doc_id: Any) -> Document:
        if image_rel not in pages:
            pages[image_rel] = _page_document(image_rel, image_root, ocr_root, settings, cache_dir, json_path)
            pages[image_rel].meta["docId"] = doc_id
        return pages[image_rel]

    examples = list(_questions(data, json_path, split, page, fuzzy_threshold, policy))
    blank = [d.id for d in pages.values() if d.image_path is None]
    if blank:
        logger.warning(
            "%d of %d DocVQA pages have no image under %s (first: %s); they are read as blank pages "
            "with their OCR words", len(blank), len(pages), image_root, blank[0],
        )
    summary = docvqa_summary(examples)
    n_official = sum(1 for d in pages.values() if d.meta["ocr"] == "official")
    logger.info(
        "DocVQA %s: %d questions on %d pages (%d official OCR, %d Tesseract); answers located for %d, "
        "not for %d (kept with no span; %d have no gold answer)",
        split, summary["questions"], len(pages), n_official, len(pages) - n_official,
        summary["located"], summary["unlocated"], summary["without_answers"],
    )
    return {split: examples}


#: Reader split names (``dataset_split``) that serve as evaluation, in order of preference.
EVAL_SPLITS = ("val", "validation", "test")


def find_question_files(root: Path) -> list[Path]:
    """The question JSON files of a DocVQA folder: ``root/*.json`` and ``root/<split>/*.json``.

    Covers the demo layout (``train_v1.0.json`` beside ``documents/``) and the official one
    (``train/train_v1.0.json``, ``val/val_v1.0.json``, ...). OCR folders are skipped.
    """
    files = [f for pattern in ("*.json", "*/*.json") for f in sorted(root.glob(pattern))
             if f.parent.name != "ocr_results" and f.name not in ("dataset_dict.json", "dataset_info.json")]
    if not files:
        raise DataError("no question file (such as train_v1.0.json or train/train_v1.0.json) here; pass the "
                        "DocVQA folder or one question JSON", root)
    return files


def _has_answers(json_path: Path) -> bool:
    """False only for a well-formed question file without any gold answer (the official test split);
    a malformed file is read, so that :func:`read_docvqa` reports it instead of it being left out."""
    try:
        record = read_json(json_path)
    except DataError:
        return True
    data = record.get("data") if isinstance(record, dict) else None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        return True
    return any(e.get("answers") for e in data)


def _read_file(json_file: Path, settings: OcrSettings, policy, workers: int | None = 1) -> dict[str, list[QAExample]]:
    """:func:`read_docvqa` on one question file; with ``skip``, a file that cannot be read at all (not
    UTF-8, not JSON, no ``data`` list) is one skipped entry and gives no questions."""
    try:
        return read_docvqa(json_file, ocr=settings, policy=policy, workers=workers)
    except DataError as exc:
        if policy is None:  # question-level errors were handled inside; this one concerns the whole file
            raise
        policy.count(1)
        policy.handle(exc, json_file.stem, json_file.name, str(json_file))
        return {}


def _split_name(json_path: Path) -> str | None:
    """A question file's ``dataset_split`` (else its stem); ``None`` for a file that cannot be read (its
    reader reports it)."""
    try:
        record = read_json(json_path)
    except DataError:
        return None
    split = record.get("dataset_split") if isinstance(record, dict) else None
    return str(split or json_path.stem)


@TASKS.register("docvqa")
class DocVqaTask(QuestionAnsweringTask):
    """DocVQA extractive QA, scored with ANLS (and exact match).

    Splits: ``train`` trains; evaluation is ``val`` (the official test answers are withheld, so a
    question file without any answer is skipped here; predict on it instead). With a single
    question file, ``data.eval_fraction`` of its *pages* (all their questions) are held out with
    ``train.seed``. Questions whose answer cannot be located on the page stay: in training every
    window of theirs targets ``<s>`` (no answer here), in evaluation they are scored with their gold
    answers like any other. Pages without official OCR files are read with Tesseract
    (``data.ocr_lang`` / ``data.ocr_psm``).
    """

    name = "docvqa"

    def _files(self, cfg: RunConfig, demo: bool) -> tuple[Path, list[Path]]:
        if demo:
            from aetnet.data.demo import ensure_demo

            path = ensure_demo("docvqa")
        elif cfg.data.path:
            path = Path(cfg.data.path).expanduser()
        else:
            raise AetnetError("DocVQA cannot be downloaded automatically (registration required); pass "
                              "--data PATH to the DocVQA folder or a question JSON, or --demo")
        if not path.exists():
            raise DataError("does not exist; pass the DocVQA folder or a question JSON", path)
        return path, [path] if path.is_file() else find_question_files(path)

    def pages_to_recognise(self, cfg: RunConfig, demo: bool = False) -> list[tuple[str, Any]]:
        """The pages of every question file that have no official OCR file (each page once)."""
        pages: dict[str, Path] = {}
        for json_file in self._files(cfg, demo)[1]:
            record = expect_object(read_json(json_file, "the DocVQA question file"), "", json_file)
            data = require(record, "data", "list", "", json_file, fix="is this a DocVQA v1.0 JSON?")
            ocr_root = json_file.parent / "ocr_results"
            for page in tesseract_pages(data, json_file.parent, ocr_root if ocr_root.is_dir() else None):
                pages.setdefault(str(page), page)
        return [(name, page) for name, page in pages.items()]

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[QAExample]]:
        path, files = self._files(cfg, demo)
        settings = OcrSettings(lang=cfg.data.ocr_lang, psm=cfg.data.ocr_psm)
        splits: dict[str, list[QAExample]] = {}
        used = [f for f in files if len(files) == 1 or _has_answers(f) or logger.info(
            "%s has no gold answers (the official test split?); not used for training or evaluation", f)]
        # With a training file and an evaluation file (the official layout), the training questions stream
        # (a DocumentStream, one page read at a time); a single file is carved by page, as a list.
        names = {f: _split_name(f) for f in used} if len(used) > 1 else {}
        streamed = [f for f in used if names.get(f) == "train"]
        if not any(names.get(f) in EVAL_SPLITS for f in used) or len(streamed) != 1:
            streamed = []
        for json_file in used:
            if json_file in streamed:
                continue
            read = _read_file(json_file, settings, bad_documents, cfg.data.ocr_workers)
            for split, examples in read.items():
                splits.setdefault(split, []).extend(examples)
        if streamed and any(splits.get(name) for name in EVAL_SPLITS):
            try:
                stream = stream_docvqa(streamed[0], settings, bad_documents, cfg.data.box_level,
                                       cfg.data.max_train_documents, cfg.data.ocr_workers)
            except DataError as exc:  # the whole file is unreadable: one unit, as _read_file does
                if bad_documents is None:
                    raise
                bad_documents.count(1)
                bad_documents.handle(exc, streamed[0].stem, streamed[0].name, str(streamed[0]))
                stream = None
            if stream is not None:
                splits["train"] = [None] * len(stream)  # map_splits takes it as is (an evaluation split is read)
                out = map_splits(splits, EVAL_SPLITS, cfg.data.eval_fraction, cfg.train.seed, f"DocVQA {path}",
                                 group=lambda ex: ex.document.id)
                out["train"] = stream
                return out
            streamed = []
        for json_file in streamed:  # no evaluation split read after all: the list path
            for split, examples in _read_file(json_file, settings, bad_documents, cfg.data.ocr_workers).items():
                splits.setdefault(split, []).extend(examples)
        return map_splits(splits, EVAL_SPLITS, cfg.data.eval_fraction, cfg.train.seed, f"DocVQA {path}",
                          group=lambda ex: ex.document.id)

    def scorer(self, id2label: dict[int, str]) -> AnswerScorer:
        return DocVqaScorer(id2label, self.max_answer_tokens)


class DocVqaScorer(AnswerScorer):
    """:class:`AnswerScorer` whose metrics add the :func:`docvqa_summary` counts of the questions scored."""

    def __init__(self, id2label: dict[int, str], max_answer_tokens: int) -> None:
        super().__init__(id2label, max_answer_tokens)
        self.counts: Counter = Counter(docvqa_summary([]))

    def add(self, example, windows, outputs):
        self.counts.update(docvqa_summary([example]))
        return super().add(example, windows, outputs)

    def metrics(self):
        return {**super().metrics(), **self.counts}
