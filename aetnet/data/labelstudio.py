"""Label Studio in and out, for the OCR / key-information template.

In: a Label Studio JSON export (a list of tasks). Each task's first annotation that was not cancelled
holds regions: a ``rectangle`` (or ``polygon``, or a rotated rectangle) in percent of
``original_width``/``original_height``, ``labels``/``rectanglelabels``/``polygonlabels`` with the
region's label, and a ``textarea`` transcription, all sharing the region ``id``; ``relation`` results
link regions. Every region becomes a segment: its words (the transcription split on spaces, or the OCR
words it covers when it has no text) share its label and its box as segment box. Polygons and rotated
rectangles become their axis-aligned envelope. Word boxes come from the words recorded in the task's
data by :func:`predictions_to_tasks` when the region still matches them, else the region box is divided
among the words by their length. Regions are read in the order the export lists them.

Out: :func:`predictions_to_tasks` turns ``aetnet predict`` records of a token model into tasks with
``predictions`` (one region per predicted entity with its score, and one unlabelled region per run of
other words on a line), which Label Studio imports as pre-annotations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aetnet.data.page_targets import region_of

IMAGE_KEYS = ("ocr", "image", "img", "page")
LABEL_TYPES = ("labels", "rectanglelabels", "polygonlabels")
SHAPE_TYPES = ("rectangle", "polygon", *LABEL_TYPES, "textarea")


def envelope(value: dict[str, Any], width: float, height: float) -> list[float]:
    """Pixel ``[x0, y0, x1, y1]`` of a region value: a rectangle (rotated about its top-left corner,
    degrees clockwise, as Label Studio stores it) or a polygon's ``points``, all in percent."""
    if "points" in value:
        xs = [p[0] * width / 100 for p in value["points"]]
        ys = [p[1] * height / 100 for p in value["points"]]
        return [min(xs), min(ys), max(xs), max(ys)]
    x, y = value["x"] * width / 100, value["y"] * height / 100
    w, h = value["width"] * width / 100, value["height"] * height / 100
    theta = math.radians(value.get("rotation", 0) or 0)
    cos, sin = math.cos(theta), math.sin(theta)
    corners = [(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return [max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), width), min(max(ys), height)]


def _image_ref(data: dict[str, Any]) -> str | None:
    for key in IMAGE_KEYS:
        if isinstance(data.get(key), str):
            return data[key]
    return next((v for v in data.values() if isinstance(v, str) and Path(v.split("?")[0]).suffix.lower()
                 in (".png", ".jpg", ".jpeg", ".tif", ".tiff")), None)


def find_image(ref: str, images: Path) -> Path | None:
    """The file in ``images`` a task's image URL names (Label Studio prefixes uploads with ``<hash>-``)."""
    name = Path(ref.split("?d=")[-1].split("?")[0]).name
    for candidate in (name, name.split("-", 1)[-1]):
        if (images / candidate).is_file():
            return images / candidate
    return None


def _regions(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Group result items by region id (in order of first appearance); collect relations."""
    regions: dict[str, dict[str, Any]] = {}
    relations = []
    for item in results:
        if item.get("type") == "relation":
            relations.append((str(item.get("from_id")), str(item.get("to_id"))))
            continue
        if item.get("type") not in SHAPE_TYPES:
            continue
        region = regions.setdefault(str(item.get("id")), {"id": str(item.get("id")), "labels": [], "text": None})
        value = item.get("value") or {}
        region.setdefault("value", value)
        region.setdefault("size", (item.get("original_width"), item.get("original_height")))
        if "points" in value:
            region["value"] = value
        for key in LABEL_TYPES:
            region["labels"] += list(value.get(key) or [])
        if item.get("type") == "textarea":
            region["text"] = " ".join(str(t) for t in value.get("text") or []).strip()
    return list(regions.values()), relations


def _split_box(box: list[float], words: list[str]) -> list[list[float]]:
    """Divide a region box horizontally among its words by their length (a space between words)."""
    total = sum(len(w) + 1 for w in words) - 1
    out, x = [], box[0]
    for w in words:
        x1 = x + (box[2] - box[0]) * len(w) / max(total, 1)
        out.append([round(x, 2), box[1], round(x1, 2), box[3]])
        x = x1 + (box[2] - box[0]) / max(total, 1)
    return out


def _known_words(data: dict[str, Any], box: list[float], words: list[str]) -> list[list[float]] | None:
    """The boxes of ``words`` when they are a run of the words recorded in the task data inside ``box``."""
    known, boxes = data.get("aetnet_words"), data.get("aetnet_boxes")
    if not isinstance(known, list) or not isinstance(boxes, list) or len(known) != len(boxes):
        return None
    inside = [region_of(b, [box]) == 0 for b in boxes]
    n = len(words)
    for i in range(len(known) - n + 1):
        if known[i:i + n] == words and all(inside[i:i + n]):
            return [list(b) for b in boxes[i:i + n]]
    return None


def task_to_page(task: dict[str, Any], images: Path, relative_to: Path,
                 ocr: Callable[[Path], tuple[list[str], list[list[float]]]]) -> tuple[dict | None, list[dict]]:
    """One exported task -> (an aetnet page, or ``None``; problems ``{"task", "region", "reason"}``)."""
    task_id = task.get("id")
    problems: list[dict] = []

    def problem(reason: str, region: str | None = None) -> None:
        problems.append({"task": task_id, "region": region, "reason": reason})

    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    ref = _image_ref(data)
    image = find_image(ref, images) if ref else None
    if image is None:
        problem(f"image {ref!r} not found in {images}" if ref else "task data names no image")
        return None, problems
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        problem("task has no annotation that was not cancelled")
        return None, problems
    if len(annotations) > 1:
        problem(f"task has {len(annotations)} annotations; the first is used")
    regions, relations = _regions(annotations[0].get("result") or [])
    from aetnet.data.images import image_size

    width, height = image_size(image)
    words: list[str] = []
    boxes: list[list[float]] = []
    segments: list[int] = []
    labels: list[str] = []
    page_ocr: tuple[list[str], list[list[float]]] | None = None
    segment_of: dict[str, int] = {}
    for region in regions:
        rid = region["id"]
        if len(set(region["labels"])) > 1:
            problem(f"region has several labels {region['labels']}; give it one", rid)
            continue
        label = region["labels"][0] if region["labels"] else "O"
        w, h = region.get("size") or (None, None)
        try:
            box = envelope(region["value"], float(w or width), float(h or height))
        except (KeyError, TypeError, ValueError):
            problem("region has no x/y/width/height or points", rid)
            continue
        scale_x, scale_y = width / float(w or width), height / float(h or height)
        box = [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]
        if region["text"]:
            region_words = region["text"].split()
            region_boxes = _known_words(data, box, region_words) or _split_box(box, region_words)
        else:
            page_ocr = page_ocr or ocr(image)
            picked = [i for i, b in enumerate(page_ocr[1]) if region_of(b, [box]) == 0]
            if not picked:
                problem("region has no transcription and OCR found no word inside it", rid)
                continue
            region_words = [page_ocr[0][i] for i in picked]
            region_boxes = [list(page_ocr[1][i]) for i in picked]
        segment_of[rid] = len(segment_of)
        words += region_words
        boxes += region_boxes
        segments += [segment_of[rid]] * len(region_words)
        labels += [label] * len(region_words)
    if not words:
        problem("no region could be converted; the page has no words")
        return None, problems
    page = {"id": str(task_id), "image": _relative(image, relative_to), "width": width, "height": height,
            "words": words, "boxes": [[round(v, 2) for v in b] for b in boxes], "segments": segments,
            "labels": labels}
    links = [[segment_of[a], segment_of[b]] for a, b in relations if a in segment_of and b in segment_of]
    if links:
        page["links"] = links
    return page, problems


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), base.resolve())


def convert_export(export: list[dict[str, Any]], images: Path, relative_to: Path,
                   ocr: Callable[[Path], tuple[list[str], list[list[float]]]]) -> tuple[list[dict], list[dict]]:
    """Every task of an export -> (pages, problems); a task or region that cannot be converted is a problem."""
    pages, problems = [], []
    for task in export:
        page, found = task_to_page(task if isinstance(task, dict) else {}, images, relative_to, ocr)
        problems += found
        if page is not None:
            pages.append(page)
    return pages, problems


# --------------------------------------------------------------------------------------- out
def _percent(box: list[float], width: float, height: float) -> dict[str, float]:
    return {"x": 100 * box[0] / width, "y": 100 * box[1] / height, "width": 100 * (box[2] - box[0]) / width,
            "height": 100 * (box[3] - box[1]) / height, "rotation": 0}


def _region_items(rid: str, box: list[float], size: tuple[int, int], text: str, label: str | None,
                  score: float | None) -> list[dict[str, Any]]:
    width, height = size
    common = {"id": rid, "to_name": "image", "original_width": width, "original_height": height,
              "image_rotation": 0}
    value = _percent(box, width, height)
    items = [{**common, "from_name": "bbox", "type": "rectangle", "value": dict(value)},
             {**common, "from_name": "transcription", "type": "textarea", "value": {**value, "text": [text]}}]
    if label is not None:
        items.append({**common, "from_name": "label", "type": "labels", "value": {**value, "labels": [label]}})
    if score is not None:
        for item in items:
            item["score"] = round(score, 5)
    return items


def predictions_to_tasks(records: list[dict[str, Any]], image_refs: list[str], model_version: str) -> list[dict]:
    """``aetnet predict`` page records of a token model -> Label Studio tasks with predictions.

    Args:
        records: one record per page (``words`` with ``text``/``box``/``label``/``score``, ``entities``).
        image_refs: the image reference (path or URL) to put in each task's ``data.ocr``.
        model_version: names the model in Label Studio.
    """
    from aetnet.data.boxes import line_segments, union_box

    tasks = []
    for record, ref in zip(records, image_refs):
        words = record["words"]
        size = tuple(record["size"])
        owner = [-1] * len(words)
        for k, ent in enumerate(record.get("entities", [])):
            for i in ent["words"]:
                owner[i] = k
        lines = line_segments([w["box"] for w in words])[0]
        result, scores, i, regions = [], [], 0, 0
        while i < len(words):
            j = i + 1
            while j < len(words) and owner[j] == owner[i] and (owner[i] >= 0 or lines[j] == lines[i]):
                j += 1
            span = words[i:j]
            box = union_box([w["box"] for w in span])
            label = record["entities"][owner[i]]["type"] if owner[i] >= 0 else None
            score = sum(w.get("score", 0.0) for w in span) / len(span) if label else None
            if score is not None:
                scores.append(score)
            regions += 1
            result += _region_items(f"r{regions}", box, size, " ".join(w["text"] for w in span), label, score)
            i = j
        tasks.append({"data": {"ocr": ref, "aetnet_words": [w["text"] for w in words],
                               "aetnet_boxes": [w["box"] for w in words]},
                      "predictions": [{"model_version": model_version,
                                       "score": round(sum(scores) / len(scores), 5) if scores else 0.0,
                                       "result": result}]})
    return tasks
