"""Entities, candidate pairs and gold links of a page, and relation windows for the pair scorer.

Relation extraction (FUNSD ``linking``) takes the page's entities as given (gold entities, the
standard protocol) and predicts which (question, answer) pairs are linked.

Protocol (shared by training, evaluation and ``aetnet predict --links``):

* an **entity** is a run of words with one segment id (FUNSD's ``form`` entry); entities without
  words cannot be represented and never take part in a pair (their links are counted apart);
* the **candidate rule**: every (head, tail) with head labelled ``QUESTION`` and tail labelled
  ``ANSWER`` on the same page is a candidate; nothing else is scored;
* **gold links**: FUNSD lists each link in both of its entities, in either order, so links are read
  as unordered pairs and normalised to (question, answer); links between other labels (header ->
  question) are outside the candidate rule and are counted apart, never scored.

A window holds the entities whose first token lies in it; an entity in several (overlapping)
windows is represented from the one where that token has the most context on both sides, as for
token predictions (:func:`merge_entity_vectors`), so entities in different windows are still paired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from aetnet.data.documents.boxes import union_box
from aetnet.data.documents.document import Document
from aetnet.data.documents.relation_protocols import (
    all_pairs,
    entity_chunks,
    in_one_chunk,
    parent_first,
    primary_occurrences,
)
from aetnet.data.encoding.windows import IGNORE_INDEX, Window, encode_token_documents, keep_most_context

#: FUNSD's entity types in id order (the relation model's label embedding rows).
ENTITY_LABELS = ["HEADER", "QUESTION", "ANSWER", "OTHER"]
HEAD_LABEL, TAIL_LABEL = "QUESTION", "ANSWER"
#: The type of words outside every labelled entity (and of unknown types).
OUTSIDE = "OTHER"


@dataclass(frozen=True)
class RelationSchema:
    """Which entity types exist and which typed pairs are candidates.

    Attributes:
        labels: entity types in id order (``OTHER`` among them, for words outside any labelled entity).
        rule: (head type, tail type) pairs whose entities form candidate pairs.
        ordered: links are given as ``[from, to]`` (own pages) rather than unordered (FUNSD).
        protocol: ``page``, ``chunks`` or ``all-links`` (:mod:`aetnet.data.documents.relation_protocols`):
            which pairs are candidates and gold, in training and evaluation.
    """

    labels: tuple[str, ...] = tuple(ENTITY_LABELS)
    rule: tuple[tuple[str, str], ...] = ((HEAD_LABEL, TAIL_LABEL),)
    ordered: bool = False
    protocol: str = "page"

    def to_meta(self) -> dict:
        """JSON form saved with the model (``aetnet.json`` key ``relations``)."""
        return {"labels": list(self.labels), "rule": [list(r) for r in self.rule], "ordered": self.ordered,
                "protocol": self.protocol}

    @classmethod
    def from_meta(cls, meta: dict | None) -> RelationSchema:
        """The schema of a model's ``aetnet.json`` (FUNSD's when the key is absent)."""
        if not meta:
            return FUNSD_SCHEMA
        return cls(tuple(meta["labels"]), tuple(tuple(r) for r in meta["rule"]), bool(meta["ordered"]),
                   str(meta.get("protocol", "page")))


FUNSD_SCHEMA = RelationSchema()


@dataclass
class Entity:
    """One entity of a page.

    Attributes:
        id: the segment id (FUNSD entity id).
        label: one of :data:`ENTITY_LABELS`.
        first_word: index of its first word in ``Document.words``.
        num_words: number of words.
        text: its words joined by spaces.
        box: pixel box ``[x0, y0, x1, y1]`` (the segment box, else the union of its word boxes).
    """

    id: int
    label: str
    first_word: int
    num_words: int
    text: str
    box: list[float]


def entity_label(word_label: str | None, labels: Sequence[str] = ENTITY_LABELS) -> str:
    """Entity type of a word's label: ``B-QUESTION``/``QUESTION`` -> ``QUESTION``; ``O``, None or a type
    outside ``labels`` -> ``OTHER``."""
    if not word_label or word_label == "O":
        return OUTSIDE
    kind = word_label[2:] if word_label[:2] in ("B-", "I-") else word_label
    return kind if kind in labels else OUTSIDE


def document_entities(doc: Document, labels: Sequence[str] = ENTITY_LABELS) -> list[Entity]:
    """The entities of ``doc``: maximal runs of words sharing a segment id (-1 words stand alone).

    Without ``segment_ids`` (e.g. predicted entities are given another way) every BIO run is one entity.
    ``labels`` are the known entity types (others read as ``OTHER``).
    """
    out: list[Entity] = []
    word_labels = doc.labels or ["O"] * len(doc.words)
    for i, word in enumerate(doc.words):
        seg = doc.segment_ids[i] if doc.segment_ids is not None else None
        label = entity_label(word_labels[i], labels)
        if seg is not None and seg >= 0:
            same = bool(out) and out[-1].id == seg and out[-1].first_word + out[-1].num_words == i
        else:
            same = bool(out) and seg is None and not word_labels[i].startswith("B-") and word_labels[i] != "O" \
                and out[-1].label == label and out[-1].first_word + out[-1].num_words == i
        if same:
            out[-1].num_words += 1
            out[-1].text += " " + word
            continue
        ident = seg if seg is not None and seg >= 0 else -(len(out) + 1)
        out.append(Entity(int(ident), label, i, 1, word, list(doc.boxes[i])))
    for ent in out:
        words = doc.boxes[ent.first_word: ent.first_word + ent.num_words]
        seg_box = doc.segment_boxes.get(ent.id) if ent.id >= 0 else None
        ent.box = list(seg_box) if seg_box is not None else union_box(words)
    return out


def candidate_pairs(entities: Sequence[Entity], schema: RelationSchema = FUNSD_SCHEMA,
                    chunks: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """The candidate (head index, tail index) pairs of a page under ``schema.protocol``; indices into
    ``entities``, heads in reading order, then tails.

    ``page``: every pair whose types the rule names (FUNSD: question, answer); ``chunks``: those of
    them whose entities belong to one chunk (``chunks``: per entity, its chunk or ``STRADDLES``);
    ``all-links``: every ordered pair of distinct entities.
    """
    if schema.protocol == "all-links":
        return all_pairs(len(entities))
    rule = set(schema.rule)
    pairs = [(i, j) for i, a in enumerate(entities) for j, b in enumerate(entities)
             if i != j and (a.label, b.label) in rule]
    if schema.protocol == "chunks":
        if chunks is None:
            raise ValueError("the chunks protocol needs each entity's chunk")
        pairs = [(i, j) for i, j in pairs if in_one_chunk(chunks, i, j)]
    return pairs


@dataclass
class GoldLinks:
    """A page's links after normalisation.

    Attributes:
        pairs: (question index, answer index) pairs, indices into the entity list, sorted.
        other: links between entities that are not a question and an answer (e.g. header -> question).
        unreachable: links to an entity without words (absent from the entity list) and, under the
            ``chunks`` protocol, links whose entities do not belong to one chunk.
    """

    pairs: list[tuple[int, int]] = field(default_factory=list)
    other: int = 0
    unreachable: int = 0


def gold_links(doc: Document, entities: Sequence[Entity], schema: RelationSchema = FUNSD_SCHEMA,
               chunks: Sequence[int] | None = None) -> GoldLinks:
    """The page's links as (head, tail) entity indices, under ``schema.protocol``.

    FUNSD (``schema.ordered`` false) lists a link in both its entities, in either order: links are
    read as unordered pairs and normalised to the direction the rule names (question -> answer).
    Ordered links (own pages) count only in their given direction. ``chunks`` keeps the links whose
    entities belong to one chunk (the others count as unreachable); ``all-links`` keeps every link
    between two entities with words, directed from parent to child
    (:func:`~aetnet.data.documents.relation_protocols.parent_first`; own pages: as given).

    Args:
        doc: the page (``doc.links`` holds raw pairs of segment ids, maybe twice).
        entities: :func:`document_entities` of ``doc``.
        schema: the candidate rule and protocol.
        chunks: per entity, its chunk (needed by the ``chunks`` protocol).
    """
    index = {e.id: k for k, e in enumerate(entities) if e.id >= 0}
    rule = set(schema.rule)
    out = GoldLinks()
    pairs = set()
    if schema.ordered:
        raw = list(dict.fromkeys((int(x), int(y)) for x, y in doc.links))
    else:  # unordered: one entry per pair, in the direction first annotated
        seen = {}
        for x, y in doc.links:
            seen.setdefault(frozenset((int(x), int(y))), (int(x), int(y)))
        raw = list(seen.values())
    for a, b in raw:
        if a not in index or b not in index:
            out.unreachable += 1
            continue
        ia, ib = index[a], index[b]
        if schema.protocol == "all-links":
            if ia == ib:
                out.other += 1
            elif schema.ordered or parent_first(entities[ia].label, entities[ib].label):
                pairs.add((ia, ib))
            else:
                pairs.add((ib, ia))
            continue
        if schema.protocol == "chunks" and not (chunks is not None and in_one_chunk(chunks, ia, ib)):
            if chunks is None:
                raise ValueError("the chunks protocol needs each entity's chunk")
            if {(entities[ia].label, entities[ib].label), (entities[ib].label, entities[ia].label)} & rule:
                out.unreachable += 1
            else:
                out.other += 1
            continue
        if ia != ib and (entities[ia].label, entities[ib].label) in rule:
            pairs.add((ia, ib))
        elif ia != ib and not schema.ordered and (entities[ib].label, entities[ia].label) in rule:
            pairs.add((ib, ia))
        else:
            out.other += 1
    out.pairs = sorted(pairs)
    return out


@dataclass
class RelationWindow(Window):
    """A :class:`Window` with the entities whose first token lies in it.

    Attributes:
        entity_index: per window entity, its index in the page's entity list.
        entity_positions: per window entity, the token position of its first token.
        entity_labels: per window entity, its label id in :data:`ENTITY_LABELS`.
        relation_labels: (E, E) nested lists: 1 linked candidate, 0 unlinked candidate, -100 not a
            candidate (``None`` when the page has no gold links, at inference).
        entity_chunks: per window entity, its chunk under the ``chunks`` protocol (``STRADDLES``: -1);
            filled whatever the protocol, so every run can report the ``chunks`` scores.
        entity_primary: per window entity, 1 when this window is the one evaluation represents it from
            (its first token has the most context here), else 0.
        page_relation_labels: (E, N) targets of each window entity as head against every one of the
            page's N entities as tail (as ``relation_labels``), for pairs across windows in training;
            (E, 0) on a page with one window; ``None`` without targets.
    """

    entity_index: list[int] = field(default_factory=list)
    entity_positions: list[int] = field(default_factory=list)
    entity_labels: list[int] = field(default_factory=list)
    relation_labels: list[list[int]] | None = None
    entity_chunks: list[int] = field(default_factory=list)
    entity_primary: list[int] = field(default_factory=list)
    page_relation_labels: list[list[int]] | None = None

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The entity tensors of this window for :class:`~aetnet.data.encoding.windows.WindowDataset`."""
        out = {"entity_positions": torch.tensor(self.entity_positions, dtype=torch.long).reshape(-1),
               "entity_labels": torch.tensor(self.entity_labels, dtype=torch.long).reshape(-1)}
        if self.relation_labels is not None:
            n = len(self.entity_positions)
            out["relation_labels"] = torch.tensor(self.relation_labels, dtype=torch.long).reshape(n, n)
        if self.page_relation_labels is not None:  # training: pairs across the windows of a batch
            n = len(self.entity_positions)
            width = len(self.page_relation_labels[0]) if n else 0
            out["page_relation_labels"] = torch.tensor(self.page_relation_labels, dtype=torch.long).reshape(n, width)
            out["entity_index"] = torch.tensor(self.entity_index, dtype=torch.long).reshape(-1)
            out["entity_primary"] = torch.tensor(self.entity_primary, dtype=torch.bool).reshape(-1)
            out["entity_pages"] = torch.full((n,), self.doc_index, dtype=torch.long)
        return out


def encode_relation_documents(
    docs: Sequence[Document],
    tokenizer,
    max_length: int = 512,
    stride: int = 128,
    box_level: str = "segment",
    with_targets: bool = True,
    schema: RelationSchema = FUNSD_SCHEMA,
    encode: Callable[..., list[Window]] | None = None,
) -> list[RelationWindow]:
    """Tokenise pages into windows carrying their entities (and, for training, pair targets).

    Args:
        docs: pages with ``segment_ids``/``labels`` (entities) and ``links``.
        tokenizer: a LayoutLMv3 tokenizer.
        max_length, stride, box_level: as :func:`~aetnet.data.encoding.windows.encode_token_documents`.
        with_targets: add ``relation_labels`` (candidate pairs inside the window, 1 for gold links).
        schema: entity types and candidate rule.
        encode: the token encoder, ``(docs, tokenizer, None, max_length, stride, box_level) -> windows`` whose
            ``word_ids`` index each page's words (default
            :func:`~aetnet.data.encoding.windows.encode_token_documents`; XFUND's reference encoding).
    """
    label_id = {label: i for i, label in enumerate(schema.labels)}
    windows: list[RelationWindow] = []
    base = (encode or encode_token_documents)(docs, tokenizer, None, max_length, stride, box_level)
    starts = [k for k, w in enumerate(base) if k == 0 or base[k - 1].doc_index != w.doc_index] + [len(base)]
    for first, end in zip(starts[:-1], starts[1:]):
        page = base[first:end]
        d = page[0].doc_index
        ents = document_entities(docs[d], schema.labels)
        chunks = entity_chunks(ents, [w.word_ids for w in page], max_length - 2, stride)
        candidates = set(candidate_pairs(ents, schema, chunks))
        gold = set(gold_links(docs[d], ents, schema, chunks).pairs)
        firsts = [_first_tokens(w.word_ids) for w in page]
        members = [[k for k, e in enumerate(ents) if e.first_word in ft] for ft in firsts]
        primary = primary_occurrences([[ft[ents[k].first_word] for k in m] for ft, m in zip(firsts, members)],
                                      [len(w.input_ids) for w in page], members, len(ents))
        for window, first_token, member, main in zip(page, firsts, members, primary):
            rel = page_rel = None
            if with_targets:
                rel = [[(1 if (a, b) in gold else 0) if (a, b) in candidates else IGNORE_INDEX for b in member]
                       for a in member]
                page_rel = [[(1 if (a, b) in gold else 0) if (a, b) in candidates else IGNORE_INDEX
                             for b in range(len(ents) if len(page) > 1 else 0)] for a in member]
            windows.append(RelationWindow(
                **vars(window), entity_index=member,
                entity_positions=[first_token[ents[k].first_word] for k in member],
                entity_labels=[label_id[ents[k].label] for k in member], relation_labels=rel,
                entity_chunks=[chunks[k] for k in member], entity_primary=main, page_relation_labels=page_rel))
    return windows


def _first_tokens(word_ids: Sequence[int | None]) -> dict[int, int]:
    """word index -> position of its first token in the window."""
    out: dict[int, int] = {}
    for pos, word in enumerate(word_ids):
        if word is not None and word not in out:
            out[word] = pos
    return out


def merge_entity_vectors(
    windows: Sequence[RelationWindow], outputs: Sequence[np.ndarray], num_entities: Sequence[int]
) -> list[list[np.ndarray | None]]:
    """One vector per page entity, from the window where its first token has the most context.

    Args:
        windows: relation windows, in the order of ``outputs``.
        outputs: per window, an array (E_window, K) (the model's per-entity output).
        num_entities: entities per page, indexed by ``doc_index``.

    Returns:
        Per page, per entity, its vector (``None`` when no window holds its first token).
    """
    occurrences = ((window.doc_index, k, pos, len(window.input_ids), vectors[row])
                   for window, vectors in zip(windows, outputs)
                   for row, (k, pos) in enumerate(zip(window.entity_index, window.entity_positions)))
    return keep_most_context(num_entities, occurrences)


def pair_logits(vectors: Sequence[np.ndarray | None], pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Link logit of each (head, tail) pair: head factor . tail factor (see ``RelationHead``).

    Args:
        vectors: per entity, its (2K,) output (head factor then tail factor), or ``None``.
        pairs: (head index, tail index) pairs.

    Returns:
        (len(pairs),) float64 logits; ``-inf`` for a pair with an unrepresented entity.
    """
    out = np.full(len(pairs), -np.inf)
    present = [v for v in vectors if v is not None]
    if not pairs or not present:
        return out
    width = present[0].shape[0]
    table = np.zeros((len(vectors), width))
    known = np.zeros(len(vectors), dtype=bool)
    for k, v in enumerate(vectors):
        if v is not None:
            table[k], known[k] = v, True
    heads, tails = np.asarray(pairs, dtype=np.int64).T
    scored = known[heads] & known[tails]
    half = width // 2
    dots = np.einsum("ij,ij->i", table[heads, :half], table[tails, half:])
    out[scored] = dots[scored]
    return out


def link_probability(logit: float) -> float:
    """A pair's link probability, ``1 / (1 + exp(-logit))``: a pair is linked when its logit is > 0 (> 0.5)."""
    return float(1.0 / (1.0 + np.exp(-logit)))


def link_scores(gold: Sequence[set[tuple[int, int]]], pred: Sequence[set[tuple[int, int]]]) -> dict[str, float]:
    """Micro precision, recall and F1 over links of all pages (a link is a directed (head, tail) pair).

    Args:
        gold: per page, its gold (question, answer) pairs.
        pred: per page, its predicted pairs.
    """
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    return link_count_scores(tp, sum(len(p) for p in pred), sum(len(g) for g in gold))


def link_count_scores(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """:func:`link_scores` from the counts: ``tp`` true links of ``n_pred`` predicted and ``n_gold`` gold."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_links": tp, "predicted_links": n_pred,
            "gold_links": n_gold}
