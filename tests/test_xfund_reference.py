"""aetnet's XFUND encoding against an independent re-implementation of the reference XFUND preprocessing
(LayoutXLM's ``layoutlmft/data/datasets/xfun.py``, microsoft/unilm), on every real sample form of
tests/data/xfund (Chinese, Japanese, Portuguese), with the tokenizer passed in as a parameter.

The re-implementation below follows the published script step by step, from the JSON files with
plain ``json`` and the image size from PIL: each entity's ``text`` is tokenised whole; the lone
word-boundary piece (XLM-R's ``▁``, id 6) gets no box of its own and takes the top-left point of the
next token's box; every other token adds the characters it covers to a running count and takes
words, in order, while the stripped, normalised characters of the words taken are fewer; its box is
the union of those words (the previous token's when none), ``int(1000 * x / size)``; labels ``B-``
on the first token of an entity, ``I-`` on the rest, ``O`` for ``other``; chunks of 512 tokens.

One generalisation, needed for byte-level tokenizers (several pieces of one character share that
character's offsets): a token adds the characters it covers that no earlier token of the entity
covered. For a SentencePiece tokenizer no two non-boundary pieces overlap, which the test checks, so
there this is the script's plain sum of offset lengths. A second, for "▁" pipelines whose offsets
include the space before a word (the one transformers builds from a bare ``sentencepiece.bpe.model``,
and the project's stand-in): spaces are not counted. The script's hub XLM-R tokenizer splits on
whitespace first, so its offsets never cover a space and the count is again the script's.

Three tokenizers: the project's tiny SentencePiece stand-in (the tokenizer of ``--base
tiny-layoutlmv3-chinese``, loaded from its folder with ``load_processor`` like a hub base); a second
SentencePiece vocabulary trained here on half the sample text, XLM-R style (Unigram, NFKC, whitespace
split then ``▁``), so that unknown pieces and NFKC normalisation are met too; and the byte-level BPE of
``--base tiny``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

FILES = ("zh.val.json", "ja.val.json", "pt.train.json")
CHUNK = 512


def _entity_texts(folder: Path) -> list[str]:
    return [e["text"] for name in FILES
            for doc in json.loads((folder / name).read_text(encoding="utf-8"))["documents"]
            for e in doc["document"]]


def _sentencepiece(folder: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    trainer = trainers.UnigramTrainer(vocab_size=1500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(_entity_texts(folder)[::2], trainer)  # half the text: some pieces are <unk>
    return XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


@pytest.fixture(scope="module", params=["tiny-layoutlmv3-chinese", "sentencepiece-sample", "byte-level"])
def tokenizer(request, shared_data):
    if request.param == "sentencepiece-sample":
        return _sentencepiece(shared_data / "xfund")
    from aetnet.data.encoding.processor import load_processor
    from aetnet.models.tiny import resolve_base

    return load_processor(resolve_base("tiny" if request.param == "byte-level" else request.param)[0]).tokenizer


def reference_form(doc: dict, image: Path, tokenizer) -> dict[str, list]:
    """The reference's tokenised form (before chunking): ``input_ids``, ``bbox``, ``labels``."""
    width, height = Image.open(image).size
    backend = tokenizer.backend_tokenizer
    boundary = tokenizer.convert_tokens_to_ids("\u2581" if "\u2581" in tokenizer.get_vocab() else "\u0120")
    out: dict[str, list] = {"input_ids": [], "bbox": [], "labels": []}
    last_box = None
    for line in doc["document"]:
        if len(line["text"]) == 0:
            continue
        words = list(line["words"])
        enc = backend.encode(line["text"], add_special_tokens=False)
        text_length = ocr_length = 0
        seen: set[int] = set()
        bbox = []
        for token_id, (start, end) in zip(enc.ids, enc.offsets):
            if token_id == boundary:
                bbox.append(None)
                continue
            text_length += sum(not line["text"][i].isspace() for i in set(range(start, end)) - seen)
            seen |= set(range(start, end))
            tmp_box = []
            while ocr_length < text_length:
                word = words.pop(0)
                text = word["text"].strip()
                ocr_length += len(backend.normalizer.normalize_str(text) if backend.normalizer else text)
                x = word["box"]
                tmp_box.append([min(x[0::2]), min(x[1::2]), max(x[2::2]), max(x[3::2])])
            if not tmp_box:
                tmp_box = last_box
            x0, y0, x1, y1 = zip(*tmp_box)
            merged = [min(x0), min(y0), max(x1), max(y1)]
            bbox.append([int(1000 * merged[0] / width), int(1000 * merged[1] / height),
                         int(1000 * merged[2] / width), int(1000 * merged[3] / height)])
            last_box = tmp_box
        bbox = [[bbox[i + 1][0], bbox[i + 1][1], bbox[i + 1][0], bbox[i + 1][1]] if b is None else b
                for i, b in enumerate(bbox)]
        if line["label"] == "other":
            labels = ["O"] * len(bbox)
        else:
            labels = [f"I-{line['label'].upper()}"] * len(bbox)
            labels[0] = f"B-{line['label'].upper()}"
        out["input_ids"] += enc.ids
        out["bbox"] += bbox
        out["labels"] += labels
    return out


def _forms(folder: Path):
    for name in FILES:
        for doc in json.loads((folder / name).read_text(encoding="utf-8"))["documents"]:
            yield name, doc


def test_first_window_of_every_form_equals_the_reference(shared_data, tokenizer):
    import aetnet.tasks  # noqa: F401  (registers the tasks)
    from aetnet.config.settings import resolve_config
    from aetnet.registry import TASKS

    folder = shared_data / "xfund"
    cfg = resolve_config({}, {"task": "xfund", "data": {"path": str(folder), "box_level": "word"}})
    task = TASKS.get("xfund")()
    task.partial = True
    splits = task.load(cfg)
    docs = {doc.id: doc for split in splits.values() for doc in split}
    labels = task.label_list()
    label2id = {name: i for i, name in enumerate(labels)}
    checked = 0
    for _file, raw in _forms(folder):
        reference = reference_form(raw, folder / raw["img"]["fname"], tokenizer)
        first = {key: values[:CHUNK] for key, values in reference.items()}
        window = task.encode([docs[raw["id"]]], tokenizer, label2id, cfg)[0]
        content = slice(1, len(window.input_ids) - 1)  # aetnet's window holds <s> and </s> around 510 tokens
        n = len(window.input_ids) - 2
        assert window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id
        assert n == min(len(reference["input_ids"]), cfg.data.max_length - 2)
        assert window.input_ids[content] == first["input_ids"][:n], raw["id"]
        assert [list(b) for b in window.bbox[content]] == first["bbox"][:n], raw["id"]
        assert [labels[i] for i in window.labels[content]] == first["labels"][:n], raw["id"]
        assert [list(b) for b in window.word_bbox[content]] == first["bbox"][:n], raw["id"]
        checked += 1
    assert checked == 9


@pytest.mark.parametrize("which", ["tiny-layoutlmv3-chinese", "sentencepiece-sample"])
def test_sentencepiece_pieces_never_overlap(shared_data, which):
    """With SentencePiece the re-implementation's character count is the script's sum of offset lengths.
    The stand-in's character inventory (generated from GB 2312 / JIS X 0208 and Unicode blocks, not from
    XFUND) leaves fewer than 1 piece in 1,000 of the sample forms unknown; the vocabulary trained on half
    the sample text does leave some."""
    from aetnet.data.encoding.processor import load_processor
    from aetnet.models.tiny import resolve_base

    if which == "sentencepiece-sample":
        tok = _sentencepiece(shared_data / "xfund")
    else:
        tok = load_processor(resolve_base(which)[0]).tokenizer
    boundary = tok.convert_tokens_to_ids("\u2581")
    pieces = unknown = 0
    for text in _entity_texts(shared_data / "xfund"):
        enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
        spans = [(s, e) for i, (s, e) in zip(enc.ids, enc.offsets) if i != boundary]
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), text
        pieces += len(spans)
        unknown += enc.ids.count(tok.unk_token_id)
    assert pieces > 5000  # both kinds of CJK word are met
    if which == "sentencepiece-sample":
        assert unknown > 0  # unknown characters are met
    else:
        assert unknown < pieces / 1000, unknown


def test_hand_worked_cjk_entity(tmp_path):
    """"姓名" as two one-character words, byte-level tiny tokenizer: ``Ġ`` then three byte pieces per
    character (each with that character's offsets). By hand: the boundary piece is the point at the top
    left of the first character; the three pieces of 姓 take word 0 (the first covers its one character,
    the next two cover nothing new and keep the previous box); those of 名 take word 1. Every token is
    labelled, B- on the first; with box_level=segment every token has the entity box."""
    from aetnet.data.documents.xfund import ImageFinder, parse_xfund_document
    from aetnet.data.encoding.processor import load_processor
    from aetnet.data.encoding.xfund import encode_xfund_documents
    from aetnet.models.tiny import resolve_base
    from aetnet.tasks.funsd import FUNSD_LABELS

    Image.new("RGB", (2000, 1000), "white").save(tmp_path / "zh_val_0.jpg")
    raw = {"id": "zh_val_0", "img": {"fname": "zh_val_0.jpg", "width": 2000, "height": 1000},
           "document": [{"id": 0, "text": "姓名", "box": [100, 100, 300, 150], "label": "question", "linking": [],
                         "words": [{"text": "姓", "box": [100, 100, 180, 150]},
                                   {"text": "名", "box": [200, 110, 300, 160]}]}]}
    doc = parse_xfund_document(raw, "documents[0]", tmp_path / "zh.val.json", "zh",
                               ImageFinder(tmp_path, "zh", "val"))
    tok = load_processor(resolve_base("tiny")[0]).tokenizer
    label2id = {name: i for i, name in enumerate(FUNSD_LABELS)}
    (window,) = encode_xfund_documents([doc], tok, label2id, box_level="word")
    w0, w1 = [50, 100, 90, 150], [100, 110, 150, 160]
    assert tok.convert_ids_to_tokens(window.input_ids[1:-1])[0] == "\u0120" and len(window.input_ids) == 2 + 7
    assert [list(b) for b in window.bbox[1:-1]] == [[50, 100, 50, 100], w0, w0, w0, w1, w1, w1]
    assert [FUNSD_LABELS[i] for i in window.labels[1:-1]] == ["B-QUESTION"] + ["I-QUESTION"] * 6
    assert window.word_ids[1:-1] == list(range(7))
    (segment,) = encode_xfund_documents([doc], tok, label2id, box_level="segment")
    assert [list(b) for b in segment.bbox[1:-1]] == [[50, 100, 150, 160]] * 7
    assert [list(b) for b in segment.word_bbox] == [list(b) for b in window.word_bbox]


def test_relation_windows_use_the_reference_tokens(shared_data, tokenizer):
    """xfund-re reads the same tokens as xfund, and each entity is represented at its first token, where the
    reference puts an entity's ``start`` (the token labelled ``B-`` for header / question / answer)."""
    import aetnet.tasks  # noqa: F401  (registers the tasks)
    from aetnet.config.settings import resolve_config
    from aetnet.registry import TASKS

    folder = shared_data / "xfund"
    cfg = resolve_config({}, {"task": "xfund-re", "data": {"path": str(folder)}})
    relation, token = TASKS.get("xfund-re")(), TASKS.get("xfund")()
    relation.partial = True
    docs = [doc for split in relation.load(cfg).values() for doc in split]
    labels = token.label_list()
    names = relation.label_list()
    rel_windows = relation.encode(docs, tokenizer, {}, cfg)
    tok_windows = token.encode(docs, tokenizer, {name: i for i, name in enumerate(labels)}, cfg)
    assert len(rel_windows) == len(tok_windows) > len(docs)
    starts, seen = 0, set()
    for rel, tok in zip(rel_windows, tok_windows):
        assert rel.input_ids == tok.input_ids and rel.bbox == tok.bbox
        if rel.doc_index in seen:  # a later window may open inside an entity (its start lies in the one before)
            continue
        seen.add(rel.doc_index)
        for position, kind in zip(rel.entity_positions, rel.entity_labels):
            if names[kind] in ("HEADER", "QUESTION", "ANSWER"):
                assert labels[tok.labels[position]] == f"B-{names[kind]}"
                starts += 1
    assert starts > 90  # of the 9 forms' first windows
