"""The base-model contract (aetnet.bases): family detection, the XLM-R SentencePiece tokenizer of
LayoutLMv3-Chinese (word boxes and first-subword labels on CJK words, checked by hand), its hub-style
folders, LiLT without an image stream on every text task and strategy, and the licence each base carries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from aetnet import bases
from aetnet.config.settings import resolve_config
from aetnet.data.documents.document import Document
from aetnet.data.encoding.processor import load_processor
from aetnet.data.encoding.windows import IGNORE_INDEX, encode_token_documents
from aetnet.errors import AetnetError
from aetnet.inference.modelio import get_strategy, get_task
from aetnet.models.tiny_bases import resolve_tiny_base
from aetnet.strategies.base import BasePaths


@pytest.fixture(scope="module")
def chinese() -> BasePaths:
    return BasePaths(*resolve_tiny_base("tiny-layoutlmv3-chinese"))


@pytest.fixture(scope="module")
def lilt() -> BasePaths:
    return BasePaths(*resolve_tiny_base("tiny-lilt"))


def _copy_base(src: str, dst: Path, drop=(), config_edit=None, tokenizer_edit=None) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    if config_edit:
        config = json.loads((dst / "config.json").read_text())
        config.update(config_edit)
        (dst / "config.json").write_text(json.dumps(config))
    if tokenizer_edit:
        tok = json.loads((dst / "tokenizer_config.json").read_text())
        tok.update(tokenizer_edit)
        (dst / "tokenizer_config.json").write_text(json.dumps(tok))
    return dst


# ------------------------------------------------------------------------------------------ detection
def test_families_of_the_stand_ins_and_of_hub_style_folders(chinese, lilt, tiny_base, tmp_path):
    assert bases.detect_family(str(tiny_base / "layoutlmv3")) is bases.LAYOUTLMV3
    assert bases.detect_family(chinese.layoutlmv3) is bases.LAYOUTLMV3_CHINESE
    assert bases.detect_family(lilt.layoutlmv3).name == "lilt"
    assert bases.detect_family(lilt.layoutlmv3).tokenizer == bases.BPE
    # An English LayoutLMv3 folder that ships sentencepiece.bpe.model is LayoutLMv3-Chinese (the hub layout).
    spm = _copy_base(str(tiny_base / "layoutlmv3"), tmp_path / "spm")
    (spm / "sentencepiece.bpe.model").write_bytes(b"")
    assert bases.detect_family(str(spm)) is bases.LAYOUTLMV3_CHINESE
    # ... and so is one whose tokenizer_config declares XLM-R's tokenizer.
    xlmr = _copy_base(str(tiny_base / "layoutlmv3"), tmp_path / "xlmr",
                      tokenizer_edit={"tokenizer_class": "XLMRobertaTokenizer"})
    assert bases.detect_family(str(xlmr)) is bases.LAYOUTLMV3_CHINESE
    # LiLT over XLM-R (nielsr/lilt-xlm-roberta-base): the LiLT family with the SentencePiece tokenizer.
    lilt_x = _copy_base(chinese.layoutlmv3, tmp_path / "lilt-x", config_edit={"model_type": "lilt"})
    family = bases.detect_family(str(lilt_x))
    assert (family.name, family.tokenizer, family.has_image) == ("lilt", bases.SENTENCEPIECE, False)


def test_unknown_bases_fail_with_one_sentence(tiny_base, tmp_path):
    bert = _copy_base(str(tiny_base / "layoutlmv3"), tmp_path / "bert", config_edit={"model_type": "bert"})
    with pytest.raises(AetnetError, match="holds a 'bert' model .*pass one of microsoft/layoutlmv3-base"):
        bases.detect_family(str(bert))
    v2 = _copy_base(str(tiny_base / "layoutlmv3"), tmp_path / "v2",
                    tokenizer_edit={"tokenizer_class": "LayoutLMv2Tokenizer"})
    with pytest.raises(AetnetError, match="WordPiece tokenizer"):
        bases.detect_family(str(v2))


def test_chinese_base_defaults_to_the_xlmr_text_aligner(chinese, tiny_base):
    recipe_image, recipe_text = "facebook/deit-base-patch16-224", "roberta-base"  # ModelConfig's defaults
    assert bases.default_aligners(chinese.layoutlmv3, recipe_image, recipe_text) == (recipe_image,
                                                                                      "xlm-roberta-base")
    assert bases.default_aligners(str(tiny_base / "layoutlmv3"), recipe_image, recipe_text) == (
        recipe_image, recipe_text)
    assert bases.default_aligners(chinese.layoutlmv3, recipe_image, "my/aligner") == (recipe_image, "my/aligner")
    # The stand-in's text aligner is an XLM-R over the base's own vocabulary.
    aligner = json.loads((Path(chinese.text_aligner) / "config.json").read_text())
    base = json.loads((Path(chinese.layoutlmv3) / "config.json").read_text())
    assert aligner["model_type"] == "xlm-roberta" and aligner["vocab_size"] == base["vocab_size"]


def test_the_contract_knows_the_recipe_default_text_aligner():
    """bases.py may not import the configuration (it sits below it): its copy of the default must match."""
    from aetnet.config.settings import ModelConfig

    assert bases.RECIPE_TEXT_ALIGNER == ModelConfig.text_aligner == "roberta-base"


# ------------------------------------------------------------------------------- SentencePiece encoding
def test_cjk_words_get_exact_boxes_and_first_subword_labels(chinese):
    """Hand-worked: XFUND-style words, one character or a whole phrase, on a 1000 x 1000 page (pixel boxes =
    0-1000 boxes). XLM-R's SentencePiece puts "▁" before each word; for CJK text that marker is a piece of its
    own and the characters follow one piece each (the tiny vocabulary, like XLM-R for rare characters), or the
    marker joins a frequent pair ("▁申请", a piece of the tiny vocabulary)."""
    tok = load_processor(chinese.layoutlmv3).tokenizer
    words = ["姓", "名", "申请表", "出生日期", "Nome"]
    boxes = [[10, 20, 30, 40], [30, 20, 50, 40], [100, 100, 190, 130], [200, 100, 320, 130], [400, 50, 460, 70]]
    labels = ["B-QUESTION", "I-QUESTION", "B-HEADER", "B-ANSWER", "O"]
    doc = Document("form", words, boxes, (1000, 1000), labels=labels)
    label2id = {"O": 0, "B-HEADER": 1, "B-QUESTION": 2, "I-QUESTION": 3, "B-ANSWER": 4}
    (window,) = encode_token_documents([doc], tok, label2id, max_length=64, stride=0, box_level="word")
    pieces = [["▁", "姓"], ["▁", "名"], ["▁申请", "表"], ["▁", "出", "生", "日", "期"], ["▁Nom", "e"]]
    expected_tokens = ["<s>"] + [p for word in pieces for p in word] + ["</s>"]
    assert tok.convert_ids_to_tokens(window.input_ids) == expected_tokens
    assert 3 not in window.input_ids  # no <unk>
    expected_boxes = [[0, 0, 0, 0]] + [boxes[i] for i, word in enumerate(pieces) for _ in word] + [[1000] * 4]
    assert window.bbox == expected_boxes
    expected_labels = [IGNORE_INDEX]
    for i, word in enumerate(pieces):
        expected_labels += [label2id[labels[i]]] + [IGNORE_INDEX] * (len(word) - 1)
    assert window.labels == expected_labels + [IGNORE_INDEX]
    assert window.word_ids == [None] + [i for i, word in enumerate(pieces) for _ in word] + [None]


def tok_pieces(tokenizer, enc) -> list[str]:
    return tokenizer.convert_ids_to_tokens(enc["input_ids"])


def test_hub_style_chinese_folder_loads_without_hand_edits(chinese, tmp_path):
    """microsoft/layoutlmv3-base-chinese declares XLM-R's tokenizer and ships no preprocessor_config.json:
    aetnet loads the box-aware XLM-R tokenizer and LayoutLMv3's image processor at the model's input size."""
    hub = _copy_base(chinese.layoutlmv3, tmp_path / "hub", drop=["preprocessor_config.json"],
                     config_edit={"tokenizer_class": "XLMRobertaTokenizer"},
                     tokenizer_edit={"tokenizer_class": "XLMRobertaTokenizer"})
    processor = load_processor(str(hub))
    assert type(processor.tokenizer).__name__ == "LayoutXLMTokenizer"
    size = json.loads((hub / "config.json").read_text())["input_size"]
    assert (processor.image_processor.size["height"], processor.image_processor.size["width"]) == (size, size)
    enc = processor.tokenizer(["申请表"], boxes=[[1, 2, 3, 4]], add_special_tokens=False)
    assert tok_pieces(processor.tokenizer, enc) == ["▁申请", "表"]  # as in the hand-worked test above
    assert enc["bbox"] == [[1, 2, 3, 4]] * 2 and enc.word_ids() == [0] * 2


def test_a_sentencepiece_model_file_alone_is_read(chinese, tmp_path):
    """The hub folder's tokenizer is only ``sentencepiece.bpe.model``: converted with the sentencepiece package."""
    spm = pytest.importorskip("sentencepiece")
    from aetnet.models.tiny_bases import multilingual_corpus

    lines, charset = multilingual_corpus()
    corpus = tmp_path / "corpus.txt"
    # the character inventory in short lines (sentencepiece skips lines over 4,192 bytes)
    corpus.write_text("\n".join(lines + [" ".join(charset[i:i + 100]) for i in range(0, len(charset), 100)]),
                      encoding="utf-8")
    folder = _copy_base(chinese.layoutlmv3, tmp_path / "spm-only", drop=["tokenizer.json", "tokenizer_config.json"])
    alphabet = len(set(charset) | set("".join(lines)))  # with character_coverage=1.0 every character is a piece
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=alphabet + 400,
                                   hard_vocab_limit=False, model_type="unigram", character_coverage=1.0, pad_id=1,
                                   bos_id=0, eos_id=2, unk_id=3, minloglevel=2)
    shutil.copy(tmp_path / "sp.model", folder / "sentencepiece.bpe.model")
    assert bases.detect_family(str(folder)) is bases.LAYOUTLMV3_CHINESE
    tok = load_processor(str(folder)).tokenizer
    enc = tok(["姓", "申请表"], boxes=[[1, 1, 2, 2], [5, 5, 9, 9]], add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    # Every word's pieces, "▁" markers removed, spell the word; each piece carries its word's box.
    by_word: dict[int, str] = {}
    for piece, w in zip(pieces, enc.word_ids()):
        by_word[w] = by_word.get(w, "") + piece.replace("▁", "")
    assert by_word == {0: "姓", 1: "申请表"}
    assert enc["bbox"] == [[[1, 1, 2, 2], [5, 5, 9, 9]][w] for w in enc.word_ids()]


# ----------------------------------------------------------------------------------- LiLT: every text task
TASKS = {"token": ("funsd", ["O", "B-QUESTION", "I-QUESTION"]), "sequence": ("rvl-cdip", ["letter", "form"]),
         "qa": ("docvqa", None), "relation": ("funsd-re", ["question", "answer", "header", "other"])}


def _text_batch(kind: str, vocab: int, pad: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (2, 12), generator=g)
    ids[1, 8:] = pad
    corners = torch.randint(0, 500, (2, 12, 2), generator=g)
    batch = {"input_ids": ids, "bbox": torch.cat([corners, corners + 10], -1),
             "attention_mask": (ids != pad).long()}
    if kind == "token":
        batch["labels"] = torch.randint(0, 3, (2, 12), generator=g).masked_fill(ids == pad, IGNORE_INDEX)
    elif kind == "sequence":
        batch["labels"] = torch.tensor([0, 1])
    elif kind == "qa":
        batch["start_positions"], batch["end_positions"] = torch.tensor([2, 0]), torch.tensor([4, 0])
    else:
        batch["entity_positions"] = torch.tensor([[1, 3, 5], [1, 4, 0]])
        batch["entity_labels"] = torch.tensor([[0, 1, 0], [0, 1, -1]])
        batch["relation_labels"] = torch.tensor([[[0, 1, 0], [0, 0, 0], [0, 0, 0]],
                                                 [[0, 1, -100], [0, 0, -100], [-100, -100, -100]]])
    return batch


@pytest.mark.parametrize("kind", list(TASKS))
@pytest.mark.parametrize("strategy", ["full", "head", "lora", "prompt"])
def test_lilt_trains_every_text_task_with_every_text_strategy(lilt, kind, strategy):
    task, labels = TASKS[kind]
    room = ["data.max_length=256"] if strategy == "prompt" else []
    cfg = resolve_config({}, {"strategy": strategy}, room)
    torch.manual_seed(0)
    model = get_strategy(strategy).build(get_task(task), cfg, lilt, labels, load_processor(lilt.layoutlmv3))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    backbone = {n for n in weights if ".lilt." in f".{n}" and "lora_" not in n}
    assert backbone, "the LiLT backbone is where the family says"
    batch = _text_batch(kind, model.config.vocab_size, model.config.pad_token_id)  # no pixel_values
    model.train()
    loss = model(**batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, weights[n])}
    if strategy == "full":
        assert changed & backbone
    else:  # head, lora and prompt keep the backbone's own weights frozen
        assert not changed & backbone
    extra = {"full": "classifier", "head": "classifier", "lora": "lora_B", "prompt": "prompt_embeddings"}
    head = "qa_outputs" if kind == "qa" and strategy in ("full", "head") else extra[strategy]
    assert any(head in n for n in changed), sorted(changed)


def test_aet_on_lilt_fails_with_one_sentence(capsys):
    from aetnet.cli.main import main
    from aetnet.models.tiny_bases import ensure_tiny_base

    ensure_tiny_base("tiny-lilt")  # built before the run, so that its progress bars are not in the output
    capsys.readouterr()
    assert main(["finetune", "funsd", "--demo", "--base", "tiny-lilt", "--strategy", "aet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["aetnet: error: --strategy aet does not work with a lilt base: LiLT has no image stream, and "
                   "AET aligns image and text features; use one of full, head, lora, prompt instead"]


# ------------------------------------------------------------------------------------------- licences
def test_each_base_names_its_licence(lilt, chinese, tiny_base):
    from aetnet.export.card import card_licence

    assert bases.base_licence("SCUT-DLVCLab/lilt-roberta-en-base").id == "mit"
    assert bases.base_licence("microsoft/layoutlmv3-base-chinese").id == "cc-by-nc-sa-4.0"
    assert bases.base_licence(lilt.layoutlmv3).id == "mit"  # a LiLT folder, by its config.json
    assert bases.base_licence(chinese.layoutlmv3).id == "cc-by-nc-sa-4.0"
    assert bases.base_licence("tiny-lilt").id == "apache-2.0"
    assert bases.base_licence("/gone/since/training").id == "cc-by-nc-sa-4.0"  # the strictest terms
    # CORD is CC BY 4.0: the base's licence governs; FUNSD has terms of its own: both are named.
    assert card_licence("SCUT-DLVCLab/lilt-roberta-en-base", "cord") == {"license": "mit"}
    assert card_licence("SCUT-DLVCLab/lilt-roberta-en-base", "funsd") == {
        "license": "other", "license_name": "mit-and-funsd-terms"}
    from aetnet.export.card import card_text

    text = card_text({"task": "funsd-re", "kind": "relation", "strategy": "full", "base": "tiny-lilt"}, {})
    assert "aetnet.models.relation.LiltForRelationExtraction.from_pretrained" in text


def test_inspect_and_compare_name_the_base_licence(lilt, tmp_path, capsys):
    from aetnet.cli.main import main
    from aetnet.compare.runs import base_line

    assert main(["inspect", "funsd", "--demo", "--base", "tiny-lilt", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["base"] == {"name": "tiny-lilt", "family": "lilt", "licence": "apache-2.0"}
    assert stats["train"]["documents"] > 0
    assert main(["inspect", "funsd", "--demo", "--base", lilt.layoutlmv3, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["base"]["licence"] == "mit"  # a LiLT folder: LiLT's MIT
    run = tmp_path / "lora" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  base: microsoft/layoutlmv3-base-chinese\n")
    assert base_line(run).startswith("Base `microsoft/layoutlmv3-base-chinese`, licence `cc-by-nc-sa-4.0`: ")


def test_layoutlmv3_only_settings_are_refused_on_lilt(lilt):
    from aetnet.strategies.base import load_task_model

    cfg = resolve_config({}, {"strategy": "full"}, ["model.train_relative_position_bias=true"])
    with pytest.raises(AetnetError, match="does nothing with a lilt base"):
        load_task_model("token", lilt.layoutlmv3, ["O", "B-X"], cfg)
