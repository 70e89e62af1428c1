"""XFUND forms -> windows, as the reference XFUND preprocessing builds them.

The published XFUND pipeline (LayoutXLM's ``layoutlmft/data/datasets/xfun.py``) does not tokenise
word by word: an XFUND "word" is one character of Chinese or Japanese, or a whole phrase, and
tokenising characters one by one would give every character its own word-start piece. It tokenises
each entity's ``text`` whole, then walks the entity's words by character count to give each token
a box:

- a token that is only the word-boundary piece (XLM-R's ``▁``, id 6; a byte-level ``Ġ``) takes the
  top-left point of the next token's box;
- every other token adds the characters its offsets cover to a running count, and the words not yet
  used are taken, in order, while the characters of the words taken (stripped, through the
  tokenizer's normaliser) are fewer than that count; the token's box is the union of the words
  taken, or the previous token's box when it took none;
- boxes are ``int(1000 * x / size)`` on the page; every token of an entity is labelled: ``B-`` on
  its first token, ``I-`` on the rest, ``O`` for ``other``.

This module does exactly that with the run's tokenizer (any fast tokenizer: the characters a token
covers are counted once, so byte-level pieces of one character do not count it several times, and
spaces are not counted: XLM-R's hub tokenizer splits on whitespace before adding "▁", so its offsets
never cover the space before a word, while a "▁" pipeline built from a bare ``sentencepiece.bpe.model``
puts that space in the offsets; for XLM-R, whose pieces never overlap, this is the reference's sum of
offset lengths).
The model sees the tokens in windows of ``max_length`` (``<s>`` and ``</s>`` around ``max_length - 2``
content tokens, ``stride`` shared), as every aetnet token task. Each token is its own unit: a
window's ``word_ids`` are the document's token indices, and predictions are scored per token, as
the reference scores XFUND (seqeval over every labelled token).

``data.box_level``: ``word`` gives each token the box above (the reference's); ``segment`` gives every
token of an entity the entity's box (the union of its words, LayoutLMv3's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

from aetnet.data.documents.boxes import normalize_box, union_box
from aetnet.data.documents.document import Document
from aetnet.data.encoding.windows import IGNORE_INDEX, NO_BOX, Window, window_starts
from aetnet.errors import AetnetError

#: The name ``aetnet.json`` records for it (``encoding``): predict and
#: serve tokenise a page word by word, which for CJK pages gives other tokens than this encoding did.
ENTITY_TEXT_ENCODING = "xfund-entity-text"

#: Pieces that mark a word boundary and carry no character of their own (SentencePiece, byte-level BPE).
BOUNDARY_MARKS = "\u2581\u0120"


def entity_runs(doc: Document) -> list[tuple[int, int, int]]:
    """``(entity id, first word, end word)`` of each entity, in reading order (words are stored entity by entity)."""
    runs: list[tuple[int, int, int]] = []
    for index, seg in enumerate(doc.segment_ids or []):
        if runs and runs[-1][0] == seg and runs[-1][2] == index:
            runs[-1] = (seg, runs[-1][1], index + 1)
        else:
            runs.append((seg, index, index + 1))
    return runs


def xfund_tokens(doc: Document, tokenizer) -> tuple[list[int], list[list[float] | None], list[list[float]],
                                                    list[str], list[int]]:
    """The reference's token sequence of one form.

    Returns:
        ``(ids, token boxes, entity boxes, labels, words)``: per token its id, its pixel box (``None`` for a
        boundary piece, resolved by :func:`xfund_token_boxes`), its entity's pixel box, its label name and
        the word it belongs to (the first word it takes; a token taking none, the word of the token before
        it; a boundary piece, the word of the token after it).
    """
    backend = tokenizer.backend_tokenizer
    normalizer = backend.normalizer
    texts = doc.meta.get("segment_texts")
    if texts is None:
        raise AetnetError(f"document '{doc.id}' was not read by the XFUND reader (no entity texts); the xfund "
                          "tasks read the release's xx.train.json / xx.val.json files")
    ids: list[int] = []
    boxes: list[list[float] | None] = []
    entity_boxes: list[list[float]] = []
    labels: list[str] = []
    token_words: list[int | None] = []
    last: list[float] | None = None
    last_word = 0
    for seg, first, end in entity_runs(doc):
        enc = backend.encode(texts[seg], add_special_tokens=False)
        word_lengths = []
        for w in range(first, end):
            text = doc.words[w].strip()
            word_lengths.append(len(normalizer.normalize_str(text) if normalizer is not None else text))
        next_word, text_length, word_length, covered = first, 0, 0, 0
        start = len(ids)
        for token_id, piece, (s, e) in zip(enc.ids, enc.tokens, enc.offsets):
            ids.append(token_id)
            if not piece.strip(BOUNDARY_MARKS):
                boxes.append(None)
                token_words.append(None)
                continue
            text_length += sum(not c.isspace() for c in texts[seg][max(s, covered):e])
            covered = max(covered, e)
            taken = []
            if word_length < text_length and next_word < end:
                last_word = next_word
            while word_length < text_length and next_word < end:
                taken.append(doc.boxes[next_word])
                word_length += word_lengths[next_word - first]
                next_word += 1
            box = union_box(taken) if taken else last
            if box is None:  # a first token covering no character (never in the release): the entity's box
                box = list(doc.segment_boxes[seg])
            boxes.append(box)
            token_words.append(last_word)
            last = box
        entity_box = list(doc.segment_boxes[seg])
        entity_boxes.extend([entity_box] * (len(ids) - start))
        kind = doc.labels[first][2:] if doc.labels and doc.labels[first] != "O" else None
        count = len(ids) - start
        labels.extend(["O"] * count if kind is None else [f"B-{kind}"] + [f"I-{kind}"] * (count - 1))
    words: list[int] = [0] * len(token_words)
    following = None
    for i in range(len(token_words) - 1, -1, -1):
        following = token_words[i] if token_words[i] is not None else following
        words[i] = following if following is not None else last_word
    return ids, boxes, entity_boxes, labels, words


def xfund_token_boxes(boxes: Sequence[list[float] | None], entity_boxes: Sequence[list[float]],
                      page_size: tuple[int, int], where: str) -> list[list[int]]:
    """0-1000 boxes of the tokens: a boundary piece takes the top-left point of the next token's box
    (the previous token's, or its entity's, when it ends the form)."""
    normalized: list[list[int] | None] = [None if b is None else normalize_box(b, page_size, where, i)
                                          for i, b in enumerate(boxes)]
    out: list[list[int]] = [[0, 0, 0, 0]] * len(boxes)
    following = None
    for i in range(len(boxes) - 1, -1, -1):
        if normalized[i] is not None:
            out[i] = following = normalized[i]
            continue
        source = following or next((b for b in reversed(normalized[:i]) if b is not None), None)
        source = source or normalize_box(entity_boxes[i], page_size, where, i)
        out[i] = [source[0], source[1], source[0], source[1]]
    return out


def encode_xfund_documents(docs: Sequence[Document], tokenizer, label2id: dict[str, int] | None,
                           max_length: int = 512, stride: int = 128, box_level: str = "segment",
                           word_units: bool = False) -> list[Window]:
    """Forms -> windows of the reference's tokens (see the module docstring).

    Args:
        docs: forms read by :mod:`aetnet.data.documents.xfund`.
        tokenizer: the base's (fast) tokenizer.
        label2id: label name -> id; ``None`` leaves the windows unlabelled.
        max_length: tokens per window including ``<s>`` and ``</s>``.
        stride: tokens shared by consecutive windows.
        box_level: ``word`` (the reference's token boxes) or ``segment`` (the entity's box).
        word_units: ``word_ids`` name each token's XFUND word (see :func:`xfund_tokens`; what the relation
            machinery locates entities by) instead of the token itself (what ``xfund`` scores).
    """
    room = max_length - 2
    if not 0 <= stride < room:
        raise AetnetError(f"data.stride={stride} must be >= 0 and below data.max_length - 2 = {room}; "
                          "lower data.stride or raise data.max_length")
    cls_box = list(getattr(tokenizer, "cls_token_box", NO_BOX))
    sep_box = list(getattr(tokenizer, "sep_token_box", NO_BOX))
    windows: list[Window] = []
    for index, doc in enumerate(docs):
        ids, boxes, entity_boxes, labels, token_words = xfund_tokens(doc, tokenizer)
        where = doc.source or doc.id
        if not ids:
            windows.append(Window(index, [tokenizer.cls_token_id, tokenizer.sep_token_id], [list(NO_BOX)] * 2,
                                  [None, None], [IGNORE_INDEX] * 2, word_bbox=[list(NO_BOX)] * 2))
            continue
        token_boxes = xfund_token_boxes(boxes, entity_boxes, doc.page_size, where)
        seen: dict[int, list[int]] = {}
        entity_norm = [seen.setdefault(id(b), normalize_box(b, doc.page_size, where, i))
                       for i, b in enumerate(entity_boxes)]
        model_boxes = token_boxes if box_level == "word" else entity_norm
        label_ids = None if label2id is None else [label2id[name] for name in labels]
        for start in window_starts(len(ids), room, stride):
            span = range(start, min(start + room, len(ids)))
            window_ids = [None, *(token_words[p] for p in span), None] if word_units else [None, *span, None]
            windows.append(Window(
                doc_index=index,
                input_ids=[tokenizer.cls_token_id] + [ids[p] for p in span] + [tokenizer.sep_token_id],
                bbox=[cls_box] + [list(model_boxes[p]) for p in span] + [sep_box],
                word_ids=window_ids,
                labels=None if label_ids is None else [IGNORE_INDEX] + [label_ids[p] for p in span] + [IGNORE_INDEX],
                word_bbox=[NO_BOX] + [token_boxes[p] for p in span] + [NO_BOX],
            ))
    return windows
