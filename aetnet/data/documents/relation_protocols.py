"""Which pairs a relation run trains and scores: the protocols of ``relations.protocol``.

Published relation-extraction numbers on FUNSD are computed under different protocols, and a page
F1 compares with none of them exactly:

* ``page`` (aetnet's default): every (question, answer) pair of a page, whatever its length; long
  pages are read in overlapping windows and their entities still meet (see :mod:`aetnet.data.documents.relations`).
* ``chunks`` (LayoutXLM / LiLT, unilm's ``layoutlmft`` XFUND/FUNSD relation code): the page's text
  tokens (no special tokens, entities in annotation order) are cut into non-overlapping chunks of
  :data:`CHUNK_TOKENS`; an entity belongs to the chunk holding its first token when its (exclusive)
  end offset is also below that chunk's end, as in the reference (so an entity whose last token is
  the chunk's last is dropped too), else it straddles and is dropped from training and gold; a link
  counts only when both its entities belong to one chunk. Micro F1 over chunks equals micro F1 over
  the remaining links, chunks being disjoint.
* ``all-links`` (BROS, GeoLayoutLM): every annotated link, whatever its entity types (header ->
  question, question -> answer, others), is gold; every ordered pair of entities is a candidate, and
  decoding keeps for each entity only its best-scoring parent, when that parent's probability is
  above 0.5. FUNSD's unordered links point from the entity whose type comes first in
  :data:`PARENT_ORDER` (header, question, answer, other), types alike in the order first annotated.

The chunk of each entity is found at encoding time (the tokenizer in use decides the token offsets)
and travels on the windows (``RelationWindow.entity_chunks``), so any run can score both ``page``
and ``chunks`` from the same predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PROTOCOLS = ("page", "chunks", "all-links")
#: Text tokens per chunk of the LayoutXLM/LiLT protocol (the reference's ``chunk_size``).
CHUNK_TOKENS = 512
#: The chunk index of an entity that straddles a chunk boundary.
STRADDLES = -1
#: Entity types from parent to child, for the direction of FUNSD's unordered links under ``all-links``.
PARENT_ORDER = ("HEADER", "QUESTION", "ANSWER", "OTHER")


def word_token_spans(word_ids_per_window: Sequence[Sequence[int | None]], room: int,
                     stride: int) -> dict[int, tuple[int, int]]:
    """word -> (first, last) offset of its tokens in the page's content tokens, from its windows.

    Args:
        word_ids_per_window: the page's windows' ``word_ids`` in order (``<s>`` first, ``</s>`` last).
        room, stride: the windows' content tokens and shared tokens (window ``k`` starts at
            ``k * (room - stride)``, :func:`aetnet.data.encoding.windows.window_starts`).
    """
    spans: dict[int, tuple[int, int]] = {}
    for k, word_ids in enumerate(word_ids_per_window):
        offset = k * (room - stride) - 1  # position 1 of window k (after <s>) is content token k*(room-stride)
        for pos, word in enumerate(word_ids):
            if word is None:
                continue
            g = offset + pos
            first, last = spans.get(word, (g, g))
            spans[word] = (min(first, g), max(last, g))
    return spans


def chunk_of(start: int, end: int, size: int = CHUNK_TOKENS) -> int:
    """The chunk of an entity whose tokens are ``start`` to ``end`` exclusive, or :data:`STRADDLES`.

    The reference keeps an entity in the chunk starting at ``index`` when ``index <= start < index +
    size`` and ``index <= end < index + size``, ``end`` exclusive.
    """
    chunk = start // size
    return chunk if end < (chunk + 1) * size else STRADDLES


def in_one_chunk(chunks: Sequence[int], head: int, tail: int) -> bool:
    """Both entities belong to the same chunk (neither straddles)."""
    return chunks[head] != STRADDLES and chunks[head] == chunks[tail]


def all_pairs(num_entities: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct entities (the ``all-links`` candidates)."""
    return [(i, j) for i in range(num_entities) for j in range(num_entities) if i != j]


def parent_first(label_a: str, label_b: str) -> bool:
    """Whether an unordered link between types ``label_a`` and ``label_b`` points from a to b (ties: yes)."""
    rank = {label: k for k, label in enumerate(PARENT_ORDER)}
    return rank.get(label_a, len(PARENT_ORDER)) <= rank.get(label_b, len(PARENT_ORDER))


def one_parent(pairs: Sequence[tuple[int, int]], logits: np.ndarray) -> list[int]:
    """Indices into ``pairs`` kept by one-parent decoding: per tail, its highest-logit head, if > 0."""
    best: dict[int, int] = {}
    for k, ((_, tail), x) in enumerate(zip(pairs, logits)):
        if x > 0 and (tail not in best or x > logits[best[tail]]):
            best[tail] = k
    return sorted(best.values())


def entity_chunks(entities: Sequence, word_ids_per_window: Sequence[Sequence[int | None]], room: int,
                  stride: int) -> list[int]:
    """Per entity, its chunk under the ``chunks`` protocol (``STRADDLES`` when it straddles a boundary).

    Token offsets are those of the page's content tokens as its windows hold them (the tokenizer in
    use, words in annotation order); an entity spans from its first word's first token to its last
    word's last token.
    """
    spans = word_token_spans(word_ids_per_window, room, stride)
    out = []
    for e in entities:
        first, last = spans.get(e.first_word), spans.get(e.first_word + e.num_words - 1)
        out.append(STRADDLES if first is None or last is None else chunk_of(first[0], last[1] + 1))
    return out


def window_entity_chunks(windows: Sequence, num_entities: Sequence[int]) -> list[list[int]]:
    """Per page (``doc_index``), per entity, its chunk as its windows carry it (``STRADDLES`` if none)."""
    out = [[STRADDLES] * n for n in num_entities]
    for w in windows:
        for k, c in zip(w.entity_index, w.entity_chunks):
            out[w.doc_index][k] = c
    return out


def primary_occurrences(positions: Sequence[Sequence[int]], lengths: Sequence[int], members: Sequence[Sequence[int]],
                        num_entities: int) -> list[list[int]]:
    """Per window, per window entity, 1 where that occurrence is the one evaluation keeps (the most context,
    ``min(position, length - 1 - position)``, the first window on a tie, as ``keep_most_context``)."""
    best = [(-1, -1, -1)] * num_entities  # (context, window, row)
    for w, (pos, length, member) in enumerate(zip(positions, lengths, members)):
        for row, (k, p) in enumerate(zip(member, pos)):
            context = min(p, length - 1 - p)
            if context > best[k][0]:
                best[k] = (context, w, row)
    out = [[0] * len(m) for m in members]
    for _, w, row in best:
        if w >= 0:
            out[w][row] = 1
    return out
