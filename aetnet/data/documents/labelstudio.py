"""Label Studio in and out, for the OCR / key-information template.

In: a Label Studio JSON export (a list of tasks). Each task's first annotation that was not cancelled
holds regions: a ``rectangle`` (or ``polygon``, or a rotated rectangle) in percent of
``original_width``/``original_height``, ``labels``/``rectanglelabels``/``polygonlabels`` with the
region's label, and a ``textarea`` transcription, all sharing the region ``id``; ``relation`` results
link regions (``direction`` ``right``: from -> to, ``left``: to -> from, ``bi``: both). Every region
becomes a segment: its words (the transcription split on spaces, or the OCR words it covers when it has
no text) share its label and its box as segment box. Polygons and rotated rectangles become their
axis-aligned envelope. Word boxes come from the words recorded in the task's data by
:func:`~aetnet.data.documents.labelstudio_out.predictions_to_tasks` when the region still matches them, else the
region box is divided among the words by their length. Regions are read in the order the export lists
them. The task's image is found by :mod:`aetnet.data.documents.labelstudio_refs` and read upright (EXIF).

Nothing is dropped silently: a task, region, result item or relation that is not converted (another
region type, a reused id, coordinates outside the image, a relation to a region that is missing, not
converted or itself, an unreadable image) is one ``{"task", "region", "reason"}`` problem.

Out: :mod:`aetnet.data.documents.labelstudio_out` (pre-annotation tasks and the labelling configuration).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aetnet.data.documents.labelstudio_refs import find_image
from aetnet.data.documents.page_targets import region_of

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


def _geometry(value: dict[str, Any]) -> tuple | None:
    """What places a region (its points or rectangle); ``None`` for a value without one."""
    if "points" in value:
        return ("points", repr(value["points"]))
    if "x" not in value:
        return None
    try:
        return tuple(round(float(value.get(k) or 0), 6) for k in ("x", "y", "width", "height", "rotation"))
    except (TypeError, ValueError):
        return tuple(repr(value.get(k)) for k in ("x", "y", "width", "height", "rotation"))


def _percent_problem(value: dict[str, Any]) -> str | None:
    """Why a region's percent coordinates cannot be a box on the page (``None`` when they can)."""
    try:
        if "points" in value:
            numbers = [float(c) for point in value["points"] for c in point]
            if not numbers or len(numbers) % 2:
                return "region has no points; give [[x, y], ...] in percent"
            bad = [v for v in numbers if not (-1e-6 <= v <= 100 + 1e-6)]
        else:
            x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
            numbers = [x, y, w, h]
            bad = [v for v in (x, y) if not (-1e-6 <= v <= 100 + 1e-6)] + [v for v in (w, h) if v < 0]
            if not value.get("rotation"):  # a rotated box may hang past the page; its envelope is clipped
                bad += [v for v in (x + w, y + h) if v > 100 + 1e-6]
    except (KeyError, TypeError, ValueError):
        return "region has no x/y/width/height or points"
    if not all(math.isfinite(v) for v in numbers):
        return "region has a coordinate that is not a finite number; fix it in Label Studio"
    if bad:
        return (f"region has percent coordinates outside 0-100 ({', '.join(f'{v:g}' for v in bad[:4])}); "
                "redraw the region inside the image")
    return None


def _regions(results: Any, problem: Callable[..., None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Group result items by region id (in order of first appearance); collect relations. Items that
    are not converted (other region types, duplicate ids, malformed items) are reported."""
    regions: dict[str, dict[str, Any]] = {}
    relations = []
    if not isinstance(results, list):
        problem(f"annotation result is {type(results).__name__}, not a list of regions; re-export the project as JSON")
        return [], []
    for k, item in enumerate(results):
        if not isinstance(item, dict):
            problem(f"result item {k} is {type(item).__name__}, not an object; re-export the project as JSON")
            continue
        kind, rid = item.get("type"), None if item.get("id") is None else str(item.get("id"))
        if kind == "relation":
            relations.append(item)
            continue
        if rid is None:
            problem(f"result item {k} ({kind}) has no region id; re-export the project as JSON")
            continue
        region = regions.setdefault(rid, {"id": rid, "labels": [], "text": None, "value": None,
                                           "unsupported": [], "duplicates": set()})
        value = item.get("value")
        if not isinstance(value, dict):
            problem(f"result item {k} ({kind}) has no value object; re-export the project as JSON", rid)
            continue
        if kind not in SHAPE_TYPES:
            region["unsupported"].append(str(kind))
            continue
        place = _geometry(value)
        if (region["value"] is not None and place is not None and place != _geometry(region["value"])) \
                or (kind == "textarea" and region["text"] is not None):
            if place not in region["duplicates"]:  # one line per duplicate region, not per item of it
                region["duplicates"].add(place)
                problem(f"result item {k} ({kind}) reuses the id of another region; that region is left out: "
                        "give each region its own id", rid)
            continue
        if region["value"] is None or "points" in value:
            region["value"] = value
        region.setdefault("size", (item.get("original_width"), item.get("original_height")))
        for key in LABEL_TYPES:
            labels = value.get(key) or []
            region["labels"] += [labels] if isinstance(labels, str) else list(labels)
        if kind == "textarea":
            text = value.get("text") or []
            # a plain string is one transcription (not one word per character)
            region["text"] = (text if isinstance(text, str) else " ".join(str(t) for t in text)).strip()
    out = []
    for region in regions.values():
        if region["unsupported"]:
            kinds = ", ".join(dict.fromkeys(region["unsupported"]))
            problem(f"region type {kinds} is not converted (only rectangles, polygons and rotated rectangles "
                    "with labels and text are); redraw it as a rectangle or polygon", region["id"])
        elif region["value"] is None:
            problem("region has no x/y/width/height or points", region["id"])
        else:
            out.append(region)
    return out, relations


def _links(relations: list[dict[str, Any]], segment_of: dict[str, int], known: set[str],
           problem: Callable[..., None]) -> list[list[int]]:
    """Label Studio relations -> ``[from, to]`` segment links: ``right`` reads from -> to, ``left``
    to -> from, ``bi`` both ways. A relation that cannot become a link is reported."""
    links: list[list[int]] = []
    for item in relations:
        a, b = str(item.get("from_id")), str(item.get("to_id"))
        direction = item.get("direction") or "right"
        what = f"relation {a} -> {b}"
        if a == b:
            problem(f"{what} links a region to itself; it is left out", a)
            continue
        missing = [r for r in (a, b) if r not in known]
        if missing:
            problem(f"{what} names region {missing[0]}, which the annotation does not have; it is left out", a)
            continue
        dropped = [r for r in (a, b) if r not in segment_of]
        if dropped:
            problem(f"{what} is left out: region {dropped[0]} was not converted (see its problem)", a)
            continue
        if direction not in ("right", "left", "bi"):
            problem(f"{what} has direction {direction!r}; expected right, left or bi", a)
            continue
        pair = [segment_of[a], segment_of[b]]
        for link in ([pair] if direction == "right" else [pair[::-1]] if direction == "left" else [pair, pair[::-1]]):
            if link not in links:
                links.append(link)
    return links


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
    from aetnet.data.ocr.images import image_size
    from aetnet.errors import DataError

    task_id = task.get("id")
    problems: list[dict] = []

    def problem(reason: str, region: str | None = None) -> None:
        problems.append({"task": task_id, "region": region, "reason": reason})

    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    ref = _image_ref(data)
    image, why = find_image(ref, images) if ref else (None, "task data names no image")
    if image is None:
        problem(why)
        return None, problems
    annotations = task.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        problem(f"annotations is {type(annotations).__name__}, not a list; re-export the project as JSON")
        return None, problems
    annotations = [a for a in annotations or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not annotations:
        problem("task has no annotation that was not cancelled")
        return None, problems
    if len(annotations) > 1:
        problem(f"task has {len(annotations)} annotations; the first is used")
    try:
        width, height = image_size(image)
    except DataError as exc:
        problem(str(exc))
        return None, problems
    regions, relations = _regions(annotations[0].get("result") or [], problem)
    words: list[str] = []
    boxes: list[list[float]] = []
    segments: list[int] = []
    labels: list[str] = []
    page_ocr: tuple[list[str], list[list[float]]] | None = None
    segment_of: dict[str, int] = {}
    for region in regions:
        rid = region["id"]
        if len(set(map(str, region["labels"]))) > 1:
            problem(f"region has several labels {region['labels']}; give it one", rid)
            continue
        label = str(region["labels"][0]) if region["labels"] else "O"
        reason = _percent_problem(region["value"])
        if reason:
            problem(reason, rid)
            continue
        try:
            w, h = (float(v) if v else None for v in region.get("size") or (None, None))
            box = envelope(region["value"], w or width, h or height)
        except (KeyError, TypeError, ValueError):
            problem("region has no x/y/width/height or points, or a bad original_width/original_height", rid)
            continue
        scale_x, scale_y = width / (w or width), height / (h or height)
        box = [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]
        if region["text"]:
            region_words = region["text"].split()
            region_boxes = _known_words(data, box, region_words) or _split_box(box, region_words)
        else:
            try:
                page_ocr = page_ocr or ocr(image)
            except DataError as exc:
                problem(f"region has no transcription and the page cannot be read with OCR: {exc}", rid)
                continue
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
    known = {r["id"] for r in regions} | {p["region"] for p in problems if p["region"] is not None}
    links = _links(relations, segment_of, known, problem)
    if not words:
        problem("no region could be converted; the page has no words")
        return None, problems
    page = {"id": str(task_id), "image": _relative(image, relative_to), "width": width, "height": height,
            "words": words, "boxes": [[round(v, 2) for v in b] for b in boxes], "segments": segments,
            "labels": labels}
    if links:
        page["links"] = links
    return page, problems


def _relative(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), base.resolve())


def json_min_tasks(export: list[Any]) -> bool:
    """Whether ``export`` is a JSON-MIN export: flat records (the task's data fields beside one list per
    control tag, ``annotator``/``annotation_id``), with neither ``data`` nor ``annotations``."""
    records = [t for t in export if isinstance(t, dict)]
    return bool(records) and all("data" not in t and "annotations" not in t and "predictions" not in t
                                 for t in records) and any(
        {"annotator", "annotation_id", "lead_time"} & set(t) or
        any(isinstance(v, list) and v and isinstance(v[0], dict) and "original_width" in v[0] for v in t.values())
        for t in records)


def convert_export(export: list[dict[str, Any]], images: Path, relative_to: Path,
                   ocr: Callable[[Path], tuple[list[str], list[list[float]]]]) -> tuple[list[dict], list[dict]]:
    """Every task of an export -> (pages, problems); a task or region that cannot be converted is a problem."""
    pages, problems = [], []
    for k, task in enumerate(export):
        if not isinstance(task, dict):
            problems.append({"task": None, "region": None, "reason": f"task {k} of the export is "
                             f"{type(task).__name__}, not an object; re-export the project as JSON"})
            continue
        page, found = task_to_page(task, images, relative_to, ocr)
        problems += found
        if page is not None:
            pages.append(page)
    return pages, problems
