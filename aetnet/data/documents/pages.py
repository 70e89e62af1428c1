"""The aetnet page format: a user's own documents, one JSON page per line (``pages.jsonl``).

Each line is one page (the schema is ``pages.schema.json`` beside this module; ``aetnet formats show
pages`` prints it)::

    {"id": "inv-001", "image": "images/inv-001.png",
     "words": ["Total:", "12.00"], "boxes": [[40, 900, 120, 930], [130, 900, 200, 930]],
     "segments": [0, 1], "labels": ["KEY", "TOTAL"], "links": [[0, 1]]}

- ``image`` is relative to the JSONL file; ``width``/``height`` are read from it when absent (a
  page without an image must give both and is seen as blank).
- Boxes are pixels ``[x0, y0, x1, y1]`` on the image.
- The target is one of ``labels`` (one per word: plain names, or BIO tags), ``entities``
  (``[{"label": ..., "words": [indices]}]``, or ``"box"`` instead of ``"words"`` on pages without
  words), ``class``, or ``qa`` (``[{"question": ..., "answers": [...]}]``). Plain names become BIO
  over consecutive words of one segment (``O`` is outside); BIOES/BILOU tags become BIO
  (:mod:`aetnet.data.documents.page_checks`); entities give their words B/I tags. QA answers must be among the words.
- ``segments`` (one id per word) give segment-level boxes (the union of the segment's word boxes);
  without them, each labelled entity is a segment. ``links`` pair entity (segment) ids that words carry.
- A page with no ``words`` goes through Tesseract; its ``entities`` then give ``box`` regions, and
  each OCR word takes the label of the region that covers most of it (at least half).

Splits: a folder holding ``train.jsonl`` and ``validation.jsonl``/``val.jsonl``/``dev.jsonl`` and/or
``test.jsonl`` uses them; a single file is one pool that the task carves deterministically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from aetnet.data.documents.boxes import union_boxes
from aetnet.data.documents.document import Document, QAExample
from aetnet.data.documents.page_checks import (
    check_links,
    image_error_at,
    page_image_path,
    shorten,
    tag_scheme,
    tags_to_bio,
)
from aetnet.data.documents.page_targets import (
    check_box,
    entities_to_labels,
    entity_segments,
    plain_to_bio,
    regions_to_labels,
    require_that,
)
from aetnet.data.documents.stream import DocumentRef
from aetnet.data.documents.validate import (
    at,
    expect_integer,
    expect_list,
    expect_object,
    expect_string,
    require,
)
from aetnet.errors import AetnetError, DataError

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": ("train",), "validation": ("validation", "val", "dev"), "test": ("test",)}
TARGETS = ("labels", "entities", "class", "qa")


def page_schema() -> dict[str, Any]:
    """The JSON Schema of one page line (``aetnet formats show pages``)."""
    schema = resources.files("aetnet.data.documents").joinpath("pages.schema.json")
    return json.loads(schema.read_text(encoding="utf-8"))


def find_page_files(path: str | Path) -> dict[str, Path]:
    """``{split: file}`` for a JSONL file (split ``all``) or a folder of ``train``/``validation``/``test`` files.

    Raises:
        AetnetError: the path does not exist or the folder holds no split file.
    """
    path = Path(path)
    if path.is_file():
        return {"all": path}
    if not path.is_dir():
        raise AetnetError(f"{path}: no such file or folder; pass --data to a pages .jsonl file or a folder of them")
    found = {}
    for split, stems in SPLIT_FILES.items():
        for stem in stems:
            if (path / f"{stem}.jsonl").is_file():
                found[split] = path / f"{stem}.jsonl"
                break
    if not found:
        raise AetnetError(f"{path}: folder holds none of train.jsonl, validation.jsonl, test.jsonl; "
                          "name the page files after their split (see `aetnet formats show pages`)")
    return found


def iter_page_lines(path: Path) -> Iterator[tuple[str, dict[str, Any] | DataError]]:
    """``(where, record)`` per non-blank line, ``where`` = ``file:line``; an unparsable line yields its error."""
    for where, _, record in _page_lines(path):
        yield where, record


def _page_lines(path: Path) -> Iterator[tuple[str, int, dict[str, Any] | DataError]]:
    """:func:`iter_page_lines` with each line's byte offset in the file (where it can be read again)."""
    with open(path, "rb") as fh:
        number, offset = 0, 0
        for raw in fh:
            number += 1
            where, at_line, offset = f"{path}:{number}", offset, offset + len(raw)
            if not raw.strip():
                continue
            yield where, at_line, _parse_line(raw, where)


def _parse_line(raw: bytes, where: str) -> dict[str, Any] | DataError:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return DataError("line is not UTF-8 text; re-save the file as UTF-8", where)
    except json.JSONDecodeError as exc:
        return DataError(f"invalid JSON ({exc.msg}, column {exc.colno}); one page object per line", where)
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return DataError(f"invalid JSON number ({str(exc)[:80]}); give numbers of a normal size", where)
    if not isinstance(record, dict):
        return DataError("line is not a JSON object; one page object per line", where)
    return record


def _page_again(file: Path, offset: int, where: str, kind: str, ocr) -> Document:
    """The page of the line at ``offset`` of ``file``, read and parsed again (it parsed before)."""
    with open(file, "rb") as fh:
        fh.seek(offset)
        record = _parse_line(fh.readline(), where)
    if isinstance(record, DataError):
        raise AetnetError(f"{where}: the line changed while the run read it ({record}); start the run again")
    return parse_page(record, where, file.parent, kind, ocr)


# ------------------------------------------------------------------------------------- validation
def _page_size(record: dict, where: str, base: Path) -> tuple[tuple[int, int], Path | None]:
    image = record.get("image")
    path = page_image_path(image, where, base) if image is not None else None
    w, h = record.get("width"), record.get("height")
    if w is None and h is None:
        require_that(path is not None, where, "image", "a page needs an image, or width and height for a blank page")
        from aetnet.data.ocr.images import image_size

        try:
            return image_size(path), path
        except DataError as exc:  # unreadable, or too large: name the line that refers to the image
            raise image_error_at(exc, path, where) from None
    fix = "give width and height as the image's pixel size"
    w, h = require(record, "width", "integer", "", where, fix=fix), require(record, "height", "integer", "", where,
                                                                              fix=fix)
    require_that(w > 0 and h > 0, where, "width", f"page size {w}x{h} must be positive; {fix}")
    return (w, h), path


def _check_words(record: dict, where: str, size: tuple[int, int]) -> tuple[list[str], list[list[float]]]:
    words, boxes = record.get("words"), record.get("boxes")
    if words is None:
        require_that(boxes is None, where, "words", "boxes are given without words; add the words")
        return [], []
    words = expect_list(words, "words", where, fix="words must be a list of strings")
    for i, word in enumerate(words):
        expect_string(word, f"words[{i}]", where, fix="words must be a list of strings")
    boxes = expect_list(boxes, "boxes", where, fix="boxes must be a list of [x0, y0, x1, y1] pixel boxes, one per word")
    require_that(len(boxes) == len(words), where, "boxes", f"{len(words)} words but {len(boxes)} boxes; give one box "
             "per word")
    return list(words), [check_box(b, where, f"boxes[{i}]", size) for i, b in enumerate(boxes)]


# ------------------------------------------------------------------------------------- one page
def parse_page(record: dict[str, Any], where: str, base: Path, kind: str | None,
               ocr=None) -> Document | list[QAExample]:
    """One validated page line -> a :class:`Document` (token/sequence) or its :class:`QAExample` list (qa).

    Args:
        record: the parsed JSON object.
        where: ``file:line``, named in every error.
        base: the folder image paths are relative to.
        kind: ``token``, ``sequence`` or ``qa`` (which target the page must carry); ``None`` reads no target
            (pages to predict on).
        ocr: ``image path -> (words, pixel boxes)`` for pages without words (default: Tesseract, cached).

    Raises:
        DataError: a field is missing, of the wrong type or inconsistent; the message names the line,
            the field and the fix.
    """
    page_id = require(record, "id", "text", "", where, fix="give every page a unique id")
    require_that(page_id.strip() != "", where, "id", "is empty; give every page a unique id")
    unknown = set(record) - {"id", "image", "width", "height", "words", "boxes", "segments", *TARGETS, "links",
                             "split", "meta"}
    require_that(not unknown, where, sorted(unknown)[0] if unknown else "", "is not a page field; see `aetnet formats "
             "show pages`")
    size, image_path = _page_size(record, where, base)
    words, boxes = _check_words(record, where, size)
    from_ocr = not words and image_path is not None and record.get("words") is None
    if from_ocr:
        if ocr is None:
            from aetnet.data.ocr.tesseract import ocr_image

            ocr = ocr_image
        try:
            words, boxes = ocr(image_path)
        except DataError as exc:  # an image OCR cannot read: name the line that refers to it
            raise image_error_at(exc, image_path, where) from None
    labels, segments = (None, None) if kind is None else _target_labels(record, kind, words, boxes, where, size,
                                                                           from_ocr)
    if record.get("segments") is not None:
        require_that(not from_ocr, where, "segments", "segments need the page's words; remove them on OCR pages")
        fix = "give one integer segment id per word (-1 for none)"
        segments = [expect_integer(v, at("segments", i), where, fix)
                    for i, v in enumerate(expect_list(record["segments"], "segments", where, fix))]
        require_that(len(segments) == len(words), where, "segments", f"{len(words)} words but {len(segments)} segment "
                 "ids; give one per word (-1 for none)")
    if labels is not None and record.get("labels") is not None:
        try:
            tagged = tag_scheme(labels)
        except ValueError as exc:
            raise DataError(f"labels {exc}; give BIO tags (B-X, I-X, O) or plain names throughout", where,
                            "labels") from None
        labels = tags_to_bio(labels, where) if tagged else plain_to_bio(labels, segments)
    if segments is None and labels is not None:
        segments = entity_segments(labels)
    links = _check_links(record.get("links"), where)
    if kind is not None:
        check_links(links, segments, where)
    doc = Document(id=str(page_id), words=words, boxes=boxes, page_size=size, image_path=image_path,
                   labels=labels if kind != "qa" else None, segment_ids=segments,
                   segment_boxes=union_boxes(boxes, segments) if segments else {}, links=links,
                   doc_label=record.get("class") if kind == "sequence" else None, source=where,
                   meta={"entities": sum(1 for lb in labels or [] if lb.startswith("B-")),
                         "words_from": "ocr" if from_ocr else "file"})
    return _qa_examples(record, doc, where) if kind == "qa" else doc


def _target_labels(record: dict, kind: str, words: list[str], boxes: list[list[float]], where: str,
                   size: tuple[int, int], from_ocr: bool) -> tuple[list[str] | None, list[int] | None]:
    if kind == "sequence":
        label = require(record, "class", "string", "", where, fix="a classification page needs its class name")
        require_that(label.strip() != "", where, "class", "is empty; give the page's class name")
        return None, None
    if kind == "qa":
        fix = 'a QA page needs [{"question": "...", "answers": ["..."]}]'
        require_that(bool(require(record, "qa", "list", "", where, fix=fix)), where, "qa", f"is empty; {fix}")
        return None, None
    if record.get("labels") is not None:
        require_that(not from_ocr, where, "labels", "one label per word needs the words; give words and boxes, or "
                 "label OCR pages with entities [{\"label\", \"box\"}]")
        fix = "give one label name per word (O for none)"
        labels = [expect_string(x, at("labels", i), where, fix, empty=False)
                  for i, x in enumerate(expect_list(record["labels"], "labels", where, fix))]
        require_that(len(labels) == len(words), where, "labels", f"{len(words)} words but {len(labels)} labels; give "
                 "one label per word (O for none)")
        return list(labels), None
    require_that(record.get("entities") is not None, where, "labels", "a token-labelling page needs labels (one per "
             "word) or entities")
    if from_ocr:
        return regions_to_labels(record["entities"], boxes, where, size)
    return entities_to_labels(record["entities"], len(words), where)


def _check_links(links: Any, where: str) -> list[tuple[int, int]]:
    if links is None:
        return []
    fix = "give links as [[from entity, to entity], ...] id pairs"
    out = []
    for k, pair in enumerate(expect_list(links, "links", where, fix)):
        pair = expect_list(pair, at("links", k), where, fix)
        require_that(len(pair) == 2, where, at("links", k), f"has {len(pair)} ids; {fix}")
        out.append((expect_integer(pair[0], at(at("links", k), 0), where, fix),
                    expect_integer(pair[1], at(at("links", k), 1), where, fix)))
    return out


def _qa_examples(record: dict, doc: Document, where: str) -> list[QAExample]:
    from aetnet.data.documents.answers import locate_answer

    out = []
    for k, item in enumerate(record["qa"]):
        field, fix = at("qa", k), 'give {"question": "...", "answers": ["..."]}'
        item = expect_object(item, field, where, fix)
        require(item, "question", "string", field, where, fix=fix)
        require_that(item["question"].strip() != "", where, f"{field}.question", "is empty; give the question")
        answers = [expect_string(a, at(f"{field}.answers", i), where, fix)
                   for i, a in enumerate(require(item, "answers", "list", field, where, optional=True, default=[]))]
        span = locate_answer(doc.words, answers)
        require_that(span is not None or not any(a.strip() for a in answers), where, f"{field}.answers",
                     f"no answer of {shorten([shorten(a, 30) for a in answers], 100)} is among the page's words; an "
                     "answer must be a span of the page's words (correct it, or remove the question)")
        out.append(QAExample(id=f"{doc.id}-{k}", question=item["question"], document=doc, answers=list(answers),
                             answer_span=span))
    return out


# ------------------------------------------------------------------------------------- files
def read_pages(path: str | Path, kind: str, policy=None, ocr=None) -> dict[str, list]:
    """Read a pages file or folder: ``{split: [Document or QAExample]}`` (splits as in :func:`find_page_files`).

    Args:
        path: a ``.jsonl`` file or a folder of split files.
        kind: ``token``, ``sequence`` or ``qa``.
        policy: :class:`aetnet.data.documents.screen.BadDocuments`; ``None`` raises at the first bad line.
        ocr: OCR function for pages without words (see :func:`parse_page`).

    Raises:
        DataError: a bad line (``error`` mode); AetnetError: a missing file, duplicate ids.
    """
    out: dict[str, list] = {}
    for split, file in find_page_files(path).items():
        items: list = []
        for result, _, _ in _read_split(file, split, kind, policy, ocr):
            items.extend(result if isinstance(result, list) else [result])
        out[split] = items
    return out


def list_pages(path: str | Path, kind: str, policy=None, ocr=None) -> dict[str, list[DocumentRef]]:
    """:func:`read_pages` for ``token``/``sequence`` pages as one
    :class:`~aetnet.data.documents.stream.DocumentRef` per page (its id, and its line's place in the file): every
    line is read, checked (its problems go to ``policy`` in line order, as there) and dropped."""
    if kind == "qa":
        raise AetnetError("list_pages lists pages, not questions; read qa pages with read_pages")
    out: dict[str, list[DocumentRef]] = {}
    for split, file in find_page_files(path).items():
        out[split] = [DocumentRef(doc.id, partial(_page_again, file, offset, where, kind, ocr))
                      for doc, where, offset in _read_split(file, split, kind, policy, ocr)]
    return out


def _read_split(file: Path, split: str, kind: str, policy, ocr) -> Iterator[tuple[Any, str, int]]:
    """``(page or questions, where, offset)`` per good line of ``file``, one at a time; bad lines (and a page id
    used twice) go to ``policy``."""
    from tqdm.auto import tqdm

    from aetnet.data.documents.screen import count_given

    with open(file, "rb") as fh:
        lines = sum(1 for raw in fh if raw.strip())
    seen: dict[str, str] = {}
    for where, offset, record in tqdm(_page_lines(file), total=lines, desc=f"pages {file.name}", unit="page",
                                      disable=None, leave=False):
        def parse(where=where, record=record, file=file):
            if isinstance(record, DataError):
                raise record
            return parse_page(record, where, file.parent, kind, ocr)

        page_id = str(record.get("id")) if isinstance(record, dict) else None
        result = parse() if policy is None else policy.run(parse, split, page_id, where)
        # Units for the run's accounting: a page, or each question of a QA page (a bad line is one unit).
        count_given(policy, len(result) if isinstance(result, list) else 1)
        if result is None:
            continue
        doc = result[0].document if isinstance(result, list) and result else result
        if isinstance(doc, Document):
            if doc.id in seen:
                error = DataError(f"page id '{doc.id}' is used twice (also at {seen[doc.id]}); give every page "
                                  "a unique id", where, "id")
                if policy is None:
                    raise error
                policy.handle(error, split, doc.id, where)  # skip mode: listed, the first page is kept
                count_given(policy, 1 - len(result) if isinstance(result, list) else 0)  # one unit, as a bad line
                continue
            seen[doc.id] = where
        yield result, where, offset


def document_to_page(doc: Document, image: str | None = None, labels: list[str] | None = None) -> dict[str, Any]:
    """A :class:`Document` as one page line (words, pixel boxes, segments, BIO ``labels``, links).

    Args:
        doc: the page.
        image: the image path to write (relative to the JSONL file); default the document's own.
        labels: labels to write instead of the document's (e.g. predictions).

    Links are written between entities that have words (the only ones a page can name).
    """
    page: dict[str, Any] = {"id": doc.id}
    if image is not None or doc.image_path is not None:
        page["image"] = str(image if image is not None else doc.image_path)
    page.update(width=doc.page_size[0], height=doc.page_size[1], words=list(doc.words),
                boxes=[[round(v, 2) for v in b] for b in doc.boxes])
    if doc.segment_ids is not None:
        page["segments"] = [int(s) if s is not None else -1 for s in doc.segment_ids]
    labels = labels if labels is not None else doc.labels
    if labels is not None:
        page["labels"] = list(labels)
    if doc.doc_label is not None:
        page["class"] = doc.doc_label
    # A page names entities by the segment ids of its words: a link to an entity without words (FUNSD's
    # unfilled answers) or to itself cannot be read back (see page_checks.check_links), so it is not written.
    ids = set(doc.segment_ids or []) - {-1, None}
    links = [list(p) for p in doc.links if p[0] in ids and p[1] in ids and p[0] != p[1]]
    if links:
        page["links"] = links
    return page
