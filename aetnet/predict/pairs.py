"""Key-value pairs from pages: a token model finds the entities, a relation model links them.

``aetnet predict --entities TOKEN_MODEL --links RELATION_MODEL FILES`` runs :class:`PairPredictor`:
the token model (e.g. ``funsd``) labels the words and groups them into entities, the relation model
(e.g. ``funsd-re``) scores every (question, answer) pair of those entities with the protocol of
:mod:`aetnet.data.documents.relations`, and each linked pair (logit > 0) becomes::

    {"key": "Date:", "value": "9/3/92", "key_box": [x0, y0, x1, y1], "value_box": [...], "score": 0.97,
     "key_entity": 3, "value_entity": 4}

in the page record's ``pairs`` (pixel boxes, score = link probability). A page without questions
or answers gives ``pairs: []``.

The token model's entity types must be the relation model's (a FUNSD model's QUESTION/ANSWER for
``funsd-re``): a combination in which no linked pair of types can ever be found (a QUESTION/ANSWER
token model with a KEY/VALUE ``re`` model) is refused when loading, unless ``entity_map``
(``--entity-map QUESTION=KEY,ANSWER=VALUE``) renames the token model's types to the relation model's.

Example::

    from aetnet.predict.pairs import PairPredictor
    pages = PairPredictor("exports/funsd", "exports/funsd-re").predict_file("form.png")
    print(pages[0]["pairs"])
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aetnet.data.documents.document import Document
from aetnet.data.documents.entities import entity_tags
from aetnet.data.documents.relation_protocols import one_parent
from aetnet.data.documents.relations import (
    Entity,
    RelationSchema,
    candidate_pairs,
    document_entities,
    encode_relation_documents,
    link_probability,
    merge_entity_vectors,
    pair_logits,
)
from aetnet.data.ocr.pdftext import PdfPage
from aetnet.errors import AetnetError
from aetnet.predict.predictor import Predictor, line_segments

logger = logging.getLogger(__name__)


def entity_document(words: list[str], boxes: list[list[float]], entities: Sequence[dict],
                    size: tuple[int, int]) -> Document:
    """A page whose entities are given as in a token record (``[{"type", "words", "box"}]``).

    Entity words get ``B-/I-<type>`` labels and one segment (the entity's box); every other word
    gets ``O`` and the OCR line fragment it lies in (:func:`aetnet.predict.predictor.line_segments`).

    Args:
        words, boxes: the page's words and pixel boxes, in reading order.
        entities: the entities, their ``words`` indices contiguous.
        size: page ``(width, height)``.
    """
    labels = ["O"] * len(words)
    lines, line_boxes = line_segments(boxes) if words else ([], {})
    offset = len(entities)
    segments = [offset + s for s in lines]
    segment_boxes = {offset + s: b for s, b in line_boxes.items()}
    for k, ent in enumerate(entities):
        for i, tag in zip(ent["words"], entity_tags(str(ent["type"]), len(ent["words"]))):
            labels[i] = tag
            segments[i] = k
        segment_boxes[k] = [float(v) for v in ent["box"]]
    return Document(id="page", words=words, boxes=boxes, page_size=size, labels=labels, segment_ids=segments,
                    segment_boxes=segment_boxes)


class PairPredictor:
    """Entities from a token model, links from a relation model, on the same pages.

    Args:
        entities: token-model folder (a run's ``model/``, a run folder or an export).
        links: relation-model folder (task kind ``relation``, e.g. ``funsd-re``).
        entity_map: token-model entity type -> relation-model entity type (see :func:`parse_entity_map`);
            unmapped types keep their name.
        **options: :class:`~aetnet.predict.predictor.Predictor` options shared by both (``device``, ``dtype``,
            ``batch_size``, ``ocr``, ``backend``, ...); OCR settings are the token model's.
    """

    def __init__(self, entities: str | Path, links: str | Path, entity_map: dict[str, str] | None = None,
                 **options: Any) -> None:
        # ``revision`` names a branch of the token model's Hub repository; the relation model is read at its
        # default branch.
        link_options = {k: v for k, v in options.items() if k != "revision"}
        self._setup(Predictor(entities, **options), Predictor(links, **link_options), entities, links, entity_map)

    @classmethod
    def from_predictors(cls, entities: Predictor, links: Predictor, entities_name: str | Path,
                        links_name: str | Path, entity_map: dict[str, str] | None = None) -> PairPredictor:
        """A pair predictor over two loaded predictors (``aetnet serve MODEL --links``); the names are
        their folders, for error messages."""
        self = cls.__new__(cls)
        self._setup(entities, links, entities_name, links_name, entity_map)
        return self

    def _setup(self, entity_predictor: Predictor, link_predictor: Predictor, entities, links,
               entity_map: dict[str, str] | None) -> None:
        self.entities, self.links = entity_predictor, link_predictor
        if self.entities.kind != "token":
            raise AetnetError(f"--entities {entities}: a {self.entities.meta['task']} model is a "
                              f"{self.entities.kind} model; give a token model (e.g. funsd)")
        if self.links.kind != "relation":
            raise AetnetError(f"--links {links}: a {self.links.meta['task']} model is a {self.links.kind} "
                              "model; give a relation model (e.g. funsd-re)")
        schema = RelationSchema.from_meta(self.links.meta.get("relations"))
        # A chunks model predicts over whole pages (chunks are an evaluation protocol); all-links keeps
        # every entity's best parent only.
        self.schema = replace(schema, protocol="page") if schema.protocol == "chunks" else schema
        self.entity_map = check_entity_types(entity_types(self.entities.labels or []), self.schema,
                                             dict(entity_map or {}), str(entities), str(links))

    def ocr(self, image: Image.Image) -> tuple[list[str], list[list[float]]]:
        """Words and boxes of a page by the token model's OCR settings."""
        return self.entities.ocr(image)

    def predict_words(self, image: Image.Image, words: list[str], boxes: list[list[float]],
                      question: str | None = None, lines: list[int] | None = None,
                      segments: list[int] | None = None) -> dict[str, Any]:
        """A page whose words are known (an aetnet pages file): the token record plus ``pairs``."""
        record = self.entities.predict_words(image, words, boxes, question, lines, segments)
        record["pairs"] = self.link(image.convert("RGB"), record)
        record["links_task"] = self.links.meta["task"]
        return record

    @property
    def word_reader(self) -> Predictor:
        """The predictor whose OCR settings read the pages' words: the token model's."""
        return self.entities

    def load(self, path: str | Path) -> list[PdfPage]:
        """The pages of a file (as :meth:`Predictor.load`)."""
        return self.entities.load(path)

    def iter_load(self, path: str | Path) -> Iterator[PdfPage]:
        """:meth:`load` one page at a time (as :meth:`Predictor.iter_load`)."""
        return self.entities.iter_load(path)

    def predict_file(self, path: str | Path, question: str | None = None) -> list[dict[str, Any]]:
        """Every page of a file: the token record plus ``pairs``."""
        return self.predict_pages(path, self.load(path), question)

    def predict_pages(self, path: str | Path, pages: Sequence[Image.Image | PdfPage],
                      question: str | None = None) -> list[dict[str, Any]]:
        """Token records of the pages (see :meth:`Predictor.predict_pages`) with their ``pairs``."""
        pages = [p if isinstance(p, PdfPage) else PdfPage(p, None) for p in pages]
        records = self.entities.predict_pages(path, pages, question)
        for page, record in zip(pages, records):
            record["pairs"] = self.link(page.image.convert("RGB"), record)
            record["links_task"] = self.links.meta["task"]
        return records

    def score_pairs(self, image: Image.Image, record: dict[str, Any]) -> list[tuple[Entity, Entity, float]]:
        """Every candidate (question, answer) pair of a page's token record with its link logit."""
        words = [w["text"] for w in record["words"]]
        boxes = [[float(v) for v in w["box"]] for w in record["words"]]
        entities = [{**e, "type": self.entity_map.get(str(e["type"]), e["type"])} for e in record["entities"]]
        doc = entity_document(words, boxes, entities, image.size)
        ents = document_entities(doc, self.schema.labels)
        # Only the token model's entities are linked: under all-links every entity is a candidate, and the
        # line fragments entity_document makes of the words outside them (ids from len(entities)) would
        # give pairs whose ends are no entity of the record.
        pairs = [(h, t) for h, t in candidate_pairs(ents, self.schema)
                 if ents[h].id < len(entities) and ents[t].id < len(entities)]
        if not pairs:
            return []
        windows = encode_relation_documents([doc], self.links.processor.tokenizer, self.links.max_length,
                                            self.links.stride, self.links.box_level, with_targets=False,
                                            schema=self.schema)
        pixels = self.links.pixels(image)
        outputs = self.links.forward_windows([(w, pixels) for w in windows])
        vectors = merge_entity_vectors(windows, outputs, [len(ents)])[0]
        return [(ents[h], ents[t], float(x)) for (h, t), x in zip(pairs, pair_logits(vectors, pairs))]

    def link(self, image: Image.Image, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The linked (question, answer) pairs (logit > 0) of a page's token record.

        Returns:
            ``[{"key", "value", "key_box", "value_box", "score", "key_entity", "value_entity"}]`` in reading
            order of the keys (``*_entity``: indices into the record's ``entities``).
        """
        scored = self.score_pairs(image, record)
        if self.schema.protocol == "all-links":
            index = {id(e): k for k, e in enumerate({id(e): e for h, t, _ in scored for e in (h, t)}.values())}
            kept = one_parent([(index[id(h)], index[id(t)]) for h, t, _ in scored], np.array([x for *_, x in scored]))
            scored = [scored[k] for k in kept]
        return [{"key": h.text, "value": t.text, "key_box": [round(v) for v in h.box],
                 "value_box": [round(v) for v in t.box], "score": round(link_probability(x), 6),
                 "key_entity": h.id, "value_entity": t.id}
                for h, t, x in scored if x > 0]


def parse_entity_map(text: str | None) -> dict[str, str]:
    """``"QUESTION=KEY,ANSWER=VALUE"`` (``--entity-map``) -> ``{"QUESTION": "KEY", "ANSWER": "VALUE"}``.

    Raises:
        AetnetError: an item is not ``TOKEN_TYPE=RELATION_TYPE`` or a token type is mapped twice.
    """
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, target = (part.strip() for part in item.partition("="))
        if not (sep and name and target):
            raise AetnetError(f"--entity-map: '{item.strip()}' is not TOKEN_TYPE=RELATION_TYPE; give e.g. "
                              "--entity-map QUESTION=KEY,ANSWER=VALUE")
        if name in out:
            raise AetnetError(f"--entity-map: {name} is mapped twice; map each token-model type once")
        out[name] = target
    return out


def entity_types(labels: Sequence[str]) -> list[str]:
    """The entity types of a token model's labels (``B-QUESTION`` -> ``QUESTION``; ``O`` is none), sorted."""
    return sorted({lb[2:] if lb[:2] in ("B-", "I-") else lb for lb in labels} - {"O"})


def check_entity_types(types: Sequence[str], schema: RelationSchema, entity_map: dict[str, str], entities: str,
                       links: str) -> dict[str, str]:
    """``entity_map``, checked: its names are types of the two models, and some typed pair that the
    relation model links (``schema.rule``) can be formed from the token model's (mapped) types.

    Raises:
        AetnetError: an unknown name in the map, or no linkable pair (``pairs`` would always be empty).
    """
    relation_types = list(schema.labels)
    for name, target in entity_map.items():
        if name not in types:
            raise AetnetError(f"--entity-map {name}={target}: the token model {entities} has no entity type {name} "
                              f"(its types: {', '.join(types) or 'none'})")
        if target not in relation_types:
            raise AetnetError(f"--entity-map {name}={target}: the relation model {links} has no entity type "
                              f"{target} (its types: {', '.join(relation_types)})")
    mapped = {entity_map.get(t, t) for t in types}
    if not any(head in mapped and tail in mapped for head, tail in schema.rule):
        rule = ", ".join(f"{h} -> {t}" for h, t in schema.rule)
        shown = ", ".join(f"{t}={entity_map[t]}" if t in entity_map else t for t in types) or "none"
        raise AetnetError(f"--entities {entities} finds entity types {shown}, but the relation model {links} links "
                          f"{rule}: no pair could ever be found; give models trained on the same entity types, or "
                          "map the token model's types with --entity-map TOKEN_TYPE=RELATION_TYPE,... "
                          "(e.g. --entity-map QUESTION=KEY,ANSWER=VALUE)")
    return entity_map
