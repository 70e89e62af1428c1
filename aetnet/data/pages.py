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
  over consecutive words of one segment (``O`` is outside); entities give their words B/I tags.
- ``segments`` (one id per word) give segment-level boxes (the union of the segment's word boxes);
  without them, each labelled entity is a segment. ``links`` pair entity (segment) ids.
- A page with no ``words`` goes through Tesseract; its ``entities`` then give ``box`` regions, and
  each OCR word takes the label of the region that covers most of it (at least half).

Splits: a folder holding ``train.jsonl`` and ``validation.jsonl``/``val.jsonl``/``dev.jsonl`` and/or
``test.jsonl`` uses them; a single file is one pool that the task carves deterministically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from aetnet.data.document import Document, QAExample
from aetnet.data.validate import expect_box, expect_list, expect_string
from aetnet.errors import AetnetError, DataError

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": ("train",), "validation": ("validation", "val", "dev"), "test": ("test",)}
TARGETS = ("labels", "entities", "class", "qa")
#: Share of an OCR word's area a labelled region must cover for the word to take its label.
REGION_COVER = 0.5


def page_schema() -> dict[str, Any]:
    """The JSON Schema of one page line (``aetnet formats show pages``)."""
    return json.loads(resources.files("aetnet.data").joinpath("pages.schema.json").read_text(encoding="utf-8"))


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
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield where, DataError("line is not UTF-8 text; re-save the file as UTF-8", where)
                continue
            except json.JSONDecodeError as exc:
                yield where, DataError(f"invalid JSON ({exc.msg}, column {exc.colno}); one page object per line",
                                       where)
                continue
            if not isinstance(record, dict):
                yield where, DataError("line is not a JSON object; one page object per line", where)
                continue
            yield where, record


# ------------------------------------------------------------------------------------- validation
def _require(cond: bool, where: str, field: str, message: str) -> None:
    if not cond:
        raise DataError(message, where, field)


def _check_box(box: Any, where: str, field: str, size: tuple[int, int] | None) -> list[float]:
    # Presence and types through the readers' shared checks (aetnet.data.validate); then the geometry.
    box = expect_box(box, field, where, fix="give four pixel numbers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    _require(x0 <= x1 and y0 <= y1, where, field, f"box {box} is inverted; give [x0, y0, x1, y1] with x0 <= x1, "
             "y0 <= y1")
    if size is not None:
        w, h = size
        _require(x0 >= -1 and y0 >= -1 and x1 <= w + 1 and y1 <= h + 1, where, field,
                 f"box {box} lies outside the {w}x{h} page; boxes are pixels on the page image")
    return box


def _page_size(record: dict, where: str, base: Path) -> tuple[tuple[int, int], Path | None]:
    image = record.get("image")
    path = None
    if image is not None:
        _require(isinstance(image, str) and image.strip() != "", where, "image",
                 "must be the image path relative to the JSONL file")
        path = (base / image) if not Path(image).is_absolute() else Path(image)
        _require(path.is_file(), where, "image", f"image file {path} does not exist; fix the path (relative to "
                 "the JSONL file) or add the image")
    w, h = record.get("width"), record.get("height")
    if w is None and h is None:
        _require(path is not None, where, "image", "a page needs an image, or width and height for a blank page")
        from aetnet.data.images import image_size

        return image_size(path), path
    _require(isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0, where, "width",
             f"width/height {w!r}x{h!r} must both be positive integers (the image's pixel size)")
    return (w, h), path


def _check_words(record: dict, where: str, size: tuple[int, int]) -> tuple[list[str], list[list[float]]]:
    words, boxes = record.get("words"), record.get("boxes")
    if words is None:
        _require(boxes is None, where, "words", "boxes are given without words; add the words")
        return [], []
    words = expect_list(words, "words", where, fix="words must be a list of strings")
    for i, word in enumerate(words):
        expect_string(word, f"words[{i}]", where, fix="words must be a list of strings")
    boxes = expect_list(boxes, "boxes", where, fix="boxes must be a list of [x0, y0, x1, y1] pixel boxes, one per word")
    _require(len(boxes) == len(words), where, "boxes", f"{len(words)} words but {len(boxes)} boxes; give one box "
             "per word")
    return list(words), [_check_box(b, where, f"boxes[{i}]", size) for i, b in enumerate(boxes)]


def _check_index_list(value: Any, n: int, where: str, field: str) -> list[int]:
    _require(isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value),
             where, field, "must be a list of word indices")
    bad = [i for i in value if not 0 <= i < n]
    _require(not bad, where, field, f"word index {bad[0] if bad else ''} is out of range for a page of {n} words")
    return value


# ----------------------------------------------------------------------------------- targets -> BIO
def is_bio(labels: list[str]) -> bool:
    """True when every label is ``O`` or ``B-X``/``I-X`` (the labels are BIO tags already)."""
    return all(label == "O" or label[:2] in ("B-", "I-") for label in labels)


def plain_to_bio(labels: list[str], segments: list[int] | None) -> list[str]:
    """Plain names -> BIO: a run of one name over consecutive words of one segment is one entity."""
    out: list[str] = []
    for i, label in enumerate(labels):
        if label == "O":
            out.append("O")
            continue
        same = (i > 0 and labels[i - 1] == label
                and (segments is None or segments[i] == segments[i - 1]))
        out.append(f"{'I' if same else 'B'}-{label}")
    return out


def entity_segments(labels: list[str]) -> list[int]:
    """One segment id per word from BIO tags: each entity is a segment, an ``O`` word is its own."""
    ids, current = [], -1
    for i, label in enumerate(labels):
        if label == "O" or label.startswith("B-") or i == 0 or labels[i - 1] == "O" \
                or labels[i - 1][2:] != label[2:]:
            current += 1
        ids.append(current)
    return ids


def _entities_to_labels(entities: Any, n: int, where: str) -> tuple[list[str], list[int]]:
    """``entities`` with word indices -> BIO labels and segment ids (entity index; -1 outside)."""
    _require(isinstance(entities, list), where, "entities", 'must be a list of {"label": ..., "words": [...]}')
    labels, segments = ["O"] * n, [-1] * n
    for k, ent in enumerate(entities):
        field = f"entities[{k}]"
        _require(isinstance(ent, dict) and isinstance(ent.get("label"), str) and ent["label"].strip(), where,
                 field, 'must be {"label": "<name>", "words": [word indices]}')
        idx = sorted(_check_index_list(ent.get("words"), n, where, f"{field}.words"))
        _require(bool(idx), where, f"{field}.words", "is empty; an entity needs at least one word")
        for j, i in enumerate(idx):
            _require(segments[i] == -1, where, f"{field}.words", f"word {i} already belongs to entity "
                     f"{segments[i]}; a word belongs to one entity at most")
            labels[i] = f"{'B' if j == 0 else 'I'}-{ent['label']}"
            segments[i] = k
    return labels, segments


def _regions_to_labels(entities: Any, boxes: list[list[float]], where: str,
                       size: tuple[int, int]) -> tuple[list[str], list[int]]:
    """``entities`` with ``box`` regions on an OCR page -> BIO labels of the OCR words they cover."""
    _require(isinstance(entities, list), where, "entities", 'must be a list of {"label": ..., "box": [...]}')
    regions = []
    for k, ent in enumerate(entities):
        field = f"entities[{k}]"
        _require(isinstance(ent, dict) and isinstance(ent.get("label"), str) and "box" in ent, where, field,
                 'on a page without words each entity needs {"label": "<name>", "box": [x0, y0, x1, y1]}')
        regions.append((ent["label"], _check_box(ent["box"], where, f"{field}.box", size)))
    owner = [region_of(box, [r for _, r in regions]) for box in boxes]
    labels, segments = [], []
    for i, k in enumerate(owner):
        if k < 0:
            labels.append("O")
        else:
            labels.append(f"{'I' if i > 0 and owner[i - 1] == k else 'B'}-{regions[k][0]}")
        segments.append(k)
    unmatched = [regions[k][0] for k in range(len(regions)) if k not in owner]
    if unmatched:
        logger.warning("%s: %d labelled region(s) cover no OCR word (%s); they give no training signal",
                       where, len(unmatched), ", ".join(unmatched[:5]))
    return labels, segments


def region_of(box: list[float], regions: list[list[float]]) -> int:
    """The region covering most of ``box`` (at least :data:`REGION_COVER` of its area), else -1."""
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    best, best_share = -1, REGION_COVER
    for k, r in enumerate(regions):
        iw = min(box[2], r[2]) - max(box[0], r[0])
        ih = min(box[3], r[3]) - max(box[1], r[1])
        share = max(iw, 0.0) * max(ih, 0.0) / area
        if share >= best_share:
            best, best_share = k, share
    return best


def union_boxes(boxes: list[list[float]], segments: list[int]) -> dict[int, list[float]]:
    """The pixel box union of each segment id's words (ids < 0 are no segment)."""
    out: dict[int, list[float]] = {}
    for seg, b in zip(segments, boxes):
        if seg < 0:
            continue
        u = out.get(seg)
        out[seg] = list(b) if u is None else [min(u[0], b[0]), min(u[1], b[1]), max(u[2], b[2]), max(u[3], b[3])]
    return out


# ------------------------------------------------------------------------------------- one page
def parse_page(record: dict[str, Any], where: str, base: Path, kind: str | None, ocr=None) -> Document | list[QAExample]:
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
    page_id = record.get("id")
    _require(isinstance(page_id, (str, int)) and not isinstance(page_id, bool) and str(page_id).strip() != "",
             where, "id", "every page needs an id (a string)")
    unknown = set(record) - {"id", "image", "width", "height", "words", "boxes", "segments", *TARGETS, "links",
                             "split", "meta"}
    _require(not unknown, where, sorted(unknown)[0] if unknown else "", "is not a page field; see `aetnet formats "
             "show pages`")
    size, image_path = _page_size(record, where, base)
    words, boxes = _check_words(record, where, size)
    from_ocr = not words and image_path is not None and record.get("words") is None
    if from_ocr:
        if ocr is None:
            from aetnet.data.ocr import ocr_image

            ocr = ocr_image
        words, boxes = ocr(image_path)
    labels, segments = (None, None) if kind is None else _target_labels(record, kind, words, boxes, where, size,
                                                                           from_ocr)
    if record.get("segments") is not None:
        _require(not from_ocr, where, "segments", "segments need the page's words; remove them on OCR pages")
        seg = record["segments"]
        _require(isinstance(seg, list) and len(seg) == len(words)
                 and all(isinstance(s, int) and not isinstance(s, bool) for s in seg), where, "segments",
                 f"must be a list of {len(words)} integer segment ids, one per word (-1 for none)")
        segments = list(seg)
    if labels is not None and record.get("labels") is not None and not is_bio(labels):
        labels = plain_to_bio(labels, segments)
    if segments is None and labels is not None:
        segments = entity_segments(labels)
    links = _check_links(record.get("links"), where)
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
        label = record.get("class")
        _require(isinstance(label, str) and label.strip() != "", where, "class",
                 "a classification page needs its class name as a string")
        return None, None
    if kind == "qa":
        _require(isinstance(record.get("qa"), list) and record["qa"], where, "qa",
                 'a QA page needs [{"question": "...", "answers": ["..."]}]')
        return None, None
    if record.get("labels") is not None:
        _require(not from_ocr, where, "labels", "one label per word needs the words; give words and boxes, or "
                 "label OCR pages with entities [{\"label\", \"box\"}]")
        labels = record["labels"]
        _require(isinstance(labels, list) and all(isinstance(x, str) and x.strip() for x in labels), where,
                 "labels", "must be a list of label names (strings), one per word")
        _require(len(labels) == len(words), where, "labels", f"{len(words)} words but {len(labels)} labels; give "
                 "one label per word (O for none)")
        return list(labels), None
    _require(record.get("entities") is not None, where, "labels", "a token-labelling page needs labels (one per "
             "word) or entities")
    if from_ocr:
        return _regions_to_labels(record["entities"], boxes, where, size)
    return _entities_to_labels(record["entities"], len(words), where)


def _check_links(links: Any, where: str) -> list[tuple[int, int]]:
    if links is None:
        return []
    _require(isinstance(links, list) and all(isinstance(p, list) and len(p) == 2
                                             and all(isinstance(i, int) for i in p) for p in links),
             where, "links", "must be a list of [from entity, to entity] id pairs")
    return [(int(a), int(b)) for a, b in links]


def _qa_examples(record: dict, doc: Document, where: str) -> list[QAExample]:
    from aetnet.data.answers import locate_answer

    out = []
    for k, item in enumerate(record["qa"]):
        field = f"qa[{k}]"
        _require(isinstance(item, dict) and isinstance(item.get("question"), str) and item["question"].strip(),
                 where, field, 'must be {"question": "...", "answers": ["..."]}')
        answers = item.get("answers", [])
        _require(isinstance(answers, list) and all(isinstance(a, str) for a in answers), where,
                 f"{field}.answers", "must be a list of answer strings")
        out.append(QAExample(id=f"{doc.id}-{k}", question=item["question"], document=doc, answers=list(answers),
                             answer_span=locate_answer(doc.words, answers)))
    return out


# ------------------------------------------------------------------------------------- files
def read_pages(path: str | Path, kind: str, policy=None, ocr=None) -> dict[str, list]:
    """Read a pages file or folder: ``{split: [Document or QAExample]}`` (splits as in :func:`find_page_files`).

    Args:
        path: a ``.jsonl`` file or a folder of split files.
        kind: ``token``, ``sequence`` or ``qa``.
        policy: :class:`aetnet.data.screen.BadDocuments`; ``None`` raises at the first bad line.
        ocr: OCR function for pages without words (see :func:`parse_page`).

    Raises:
        DataError: a bad line (``error`` mode); AetnetError: a missing file, duplicate ids.
    """
    from tqdm.auto import tqdm

    from aetnet.data.screen import count_given

    out: dict[str, list] = {}
    for split, file in find_page_files(path).items():
        items: list = []
        seen: dict[str, str] = {}
        for where, record in tqdm(list(iter_page_lines(file)), desc=f"pages {file.name}", unit="page",
                                  disable=None, leave=False):
            def parse(where=where, record=record):
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
                    raise DataError(f"page id '{doc.id}' is used twice (also at {seen[doc.id]}); give every page a "
                                    "unique id", where, "id")
                seen[doc.id] = where
            items.extend(result if isinstance(result, list) else [result])
        out[split] = items
    return out


def document_to_page(doc: Document, image: str | None = None, labels: list[str] | None = None) -> dict[str, Any]:
    """A :class:`Document` as one page line (words, pixel boxes, segments, BIO ``labels``, links).

    Args:
        doc: the page.
        image: the image path to write (relative to the JSONL file); default the document's own.
        labels: labels to write instead of the document's (e.g. predictions).
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
    if doc.links:
        page["links"] = [list(p) for p in doc.links]
    return page
