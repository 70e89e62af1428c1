"""Label Studio out: pre-annotation tasks from ``aetnet predict`` records, and the labelling
configuration they need.

:func:`predictions_to_tasks` turns the page records of a token model into tasks whose ``predictions``
hold one region per predicted entity (with its score) and one unlabelled region per run of other words
on a line; each region is a ``rectangle`` (``from_name`` ``bbox``), its ``textarea`` transcription
(``transcription``) and, for an entity, its ``labels`` (``label``), all sharing one id that is unique
across the file. With a relation model (``predict --entities/--links``) each linked pair becomes a
``relation`` result from the key's region to the value's (``direction: right``, read key -> value),
which ``aetnet convert labelstudio`` reads back as the link ``[key, value]``.

:func:`labelling_config` is Label Studio's OCR template with the model's entity types as ``Label``
values, so that Label Studio shows (and its SDK's ``validate_prediction`` accepts) every predicted
region; ``aetnet formats show labelstudio-config MODEL`` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

#: The task data key holding the image (the ``$ocr`` of the configuration).
IMAGE_KEY = "ocr"


def entity_types(labels: Sequence[str]) -> list[str]:
    """The entity types of a token model's labels (``B-KEY``, ``I-KEY``, ``KEY`` -> ``KEY``; ``O`` dropped),
    in label order."""
    out: list[str] = []
    for label in labels:
        kind = label[2:] if label[:2] in ("B-", "I-") else label
        if label != "O" and kind not in out:
            out.append(kind)
    return out


def labelling_config(types: Sequence[str]) -> str:
    """Label Studio's OCR labelling configuration (XML) with ``types`` as the region labels."""
    labels = "\n".join(f"    <Label value={quoteattr(t)}/>" for t in types)
    return f"""<View>
  <Image name="image" value="${IMAGE_KEY}" zoom="true" zoomControl="true" rotateControl="false"/>
  <Labels name="label" toName="image">
{labels}
  </Labels>
  <Rectangle name="bbox" toName="image" strokeWidth="3"/>
  <Polygon name="poly" toName="image" strokeWidth="3"/>
  <TextArea name="transcription" toName="image" editable="true" perRegion="true" required="true"
            maxSubmissions="1" rows="5" placeholder="Recognized Text" displayMode="region-list"/>
  <Relations>
    <Relation value="link"/>
  </Relations>
</View>
"""


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
        records: one record per page (``words`` with ``text``/``box``/``label``/``score``, ``entities``, and
            with a relation model ``pairs`` with ``key_entity``/``value_entity`` indices into ``entities``).
        image_refs: the image reference (URL or path) to put in each task's ``data.ocr``.
        model_version: names the model in Label Studio (``aetnet.cli.predict.model_version``).
    """
    from aetnet.data.documents.boxes import line_segments, union_box

    tasks = []
    for number, (record, ref) in enumerate(zip(records, image_refs), start=1):
        words = record["words"]
        size = tuple(record["size"])
        owner = [-1] * len(words)
        for k, ent in enumerate(record.get("entities", [])):
            for i in ent["words"]:
                owner[i] = k
        lines = line_segments([w["box"] for w in words])[0]
        result, scores, i, regions, region_of_entity = [], [], 0, 0, {}
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
            rid = f"t{number}r{regions}"  # unique in the file, so tasks can be merged or re-imported
            if owner[i] >= 0:
                region_of_entity[owner[i]] = rid
            result += _region_items(rid, box, size, " ".join(w["text"] for w in span), label, score)
            i = j
        for pair in record.get("pairs", []):
            key, value = region_of_entity.get(pair["key_entity"]), region_of_entity.get(pair["value_entity"])
            if key and value:
                result.append({"type": "relation", "from_id": key, "to_id": value,
                               "direction": "right", "labels": [], "score": round(pair["score"], 5)})
        tasks.append({"data": {IMAGE_KEY: ref, "aetnet_words": [w["text"] for w in words],
                               "aetnet_boxes": [w["box"] for w in words]},
                      "predictions": [{"model_version": model_version,
                                       "score": round(sum(scores) / len(scores), 5) if scores else 0.0,
                                       "result": result}]})
    return tasks
