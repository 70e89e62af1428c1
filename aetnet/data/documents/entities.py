"""Entity-annotated pages -> BIO word labels, segment ids and segment boxes: one implementation for the readers
whose annotations are a list of entities, each with a type and its words (FUNSD's ``form`` entities, CORD's
``valid_line`` lines).

As LayoutLMv3's FUNSD and CORD preprocessing scripts do:

- a word with blank text is dropped (a box without text cannot be tokenised; it is counted);
- an entity's first kept word is ``B-<type>``, the others ``I-<type>``; an entity without a type (FUNSD's
  ``other``) labels its words ``O`` but is still a segment;
- every kept word of an entity carries the entity's segment id, and the segment's box is the union of its
  kept words' boxes (an entity whose words are all blank is no segment: counted, not kept).

The readers check their own fields (each word's box or quad, the entity's label) and hand the entities over in
reading order; the result builds the :class:`~aetnet.data.documents.document.Document` with the reader's page
size, image and meta.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aetnet.data.documents.boxes import union_box
from aetnet.data.documents.document import Box, Document


def entity_tags(kind: str | None, n: int) -> list[str]:
    """The BIO tags of one entity's ``n`` words: ``B-kind`` then ``I-kind``; ``O`` for each when ``kind`` is
    ``None`` (an entity outside every type)."""
    if kind is None:
        return ["O"] * n
    return [f"{'B' if i == 0 else 'I'}-{kind}" for i in range(n)]


@dataclass(frozen=True)
class Entity:
    """One annotated entity, as a reader checked it.

    Attributes:
        segment: its segment id (FUNSD's entity ``id``, CORD's line index).
        kind: its type (``QUESTION``, ``menu.nm``), or ``None`` for words outside every type.
        words: ``(text, pixel box)`` of each of its words in reading order, blank ones included.
    """

    segment: int
    kind: str | None
    words: Sequence[tuple[str, Box]]


@dataclass
class EntityWords:
    """The words of a page's entities, labelled (see :func:`entity_words`).

    Attributes:
        words, boxes, labels, segment_ids: one per kept word, in reading order.
        segment_boxes: segment id -> the union of its kept words' boxes, in order of first appearance (an id
            given twice takes the later entity's box).
        skipped_words: words dropped for blank text.
        empty_entities: entities all of whose words were blank (no segment).
    """

    words: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    segment_ids: list[int] = field(default_factory=list)
    segment_boxes: dict[int, Box] = field(default_factory=dict)
    skipped_words: int = 0
    empty_entities: int = 0

    def document(self, **fields: Any) -> Document:
        """A :class:`Document` of these words, labels and segments; ``fields`` gives the rest (``id``,
        ``page_size``, ``image_path``, ``links``, ``source``, ``meta``, ...)."""
        return Document(words=self.words, boxes=self.boxes, labels=self.labels, segment_ids=self.segment_ids,
                        segment_boxes=self.segment_boxes, **fields)


def entity_words(entities: Iterable[Entity]) -> EntityWords:
    """Label the words of ``entities`` (read in order, once; a reader may yield them as it checks them).

    Returns:
        The kept words with their BIO labels, segment ids and segment boxes, and what was dropped.
    """
    out = EntityWords()
    for entity in entities:
        kept = [(text, box) for text, box in entity.words if text.strip()]
        out.skipped_words += len(entity.words) - len(kept)
        if not kept:
            out.empty_entities += 1
            continue
        out.words += [text for text, _ in kept]
        out.boxes += [box for _, box in kept]
        out.labels += entity_tags(entity.kind, len(kept))
        out.segment_ids += [entity.segment] * len(kept)
        out.segment_boxes[entity.segment] = [float(v) for v in union_box([box for _, box in kept])]
    return out
