"""Offline stand-ins for the multilingual and text-only base families (like ``--base tiny``).

- ``tiny-layoutlmv3-chinese``: a tiny LayoutLMv3 whose folder ships an XLM-R-style SentencePiece tokenizer
  (a Unigram vocabulary with "▁" metaspace pieces, trained with the ``tokenizers`` library on the
  project's own multilingual corpus plus a character inventory generated from character-set standards,
  see :func:`multilingual_charset`), the
  LayoutLMv3 image processor, a tiny ViT image aligner and a tiny XLM-R text aligner over the same vocabulary.
- ``tiny-lilt``: a tiny ``LiltModel`` with the byte-level BPE vocabulary of ``--base tiny`` (like
  ``SCUT-DLVCLab/lilt-roberta-en-base``); no image processor, no aligners.

Everything is written with ``save_pretrained`` into ``$AETNET_CACHE`` and loaded back through the same
``from_pretrained`` calls as a hub base, so the stand-ins exercise the real loading paths. The folder of
each stand-in: ``model/`` (the base), and for the Chinese one ``image_aligner/`` and ``text_aligner/``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from aetnet.errors import AetnetError
from aetnet.models import tiny

logger = logging.getLogger(__name__)

TINY_BASES_VERSION = "v4"
#: LiLT's layout stream splits the width into 6 coordinate embeddings and shrinks it by 4: a multiple of 24.
TINY_LILT_HIDDEN = 48
#: Vocabulary size of the tiny SentencePiece tokenizer (at most; the character inventory alone is 6,089 pieces).
TINY_SP_VOCAB = 7400
#: The XLM-R special tokens, in XLM-R's order (ids 0-3); ``<mask>`` comes last, as in XLM-R.
SP_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
_DATA = Path(__file__).resolve().parent.parent / "data"


def _decoded(codec: str, rows: range, cells: range = range(0xA1, 0xFF)) -> str:
    """Every character of a two-byte EUC code set whose lead byte is in ``rows`` (undefined cells skipped)."""
    out = []
    for lead in rows:
        for cell in cells:
            try:
                out.append(bytes([lead, cell]).decode(codec))
            except UnicodeDecodeError:
                continue
    return "".join(out)


def _unicode_range(first: int, last: int) -> str:
    return "".join(chr(c) for c in range(first, last + 1) if not chr(c).isspace())


def multilingual_charset() -> str:
    """The characters every piece vocabulary must hold as single pieces, so that CJK, kana, full-width and
    accented words do not become ``<unk>``. Generated from character-set standards through Python's own
    codecs and Unicode blocks, not from any dataset:

    - GB 2312 (``gb2312`` codec): the symbol rows 1-9 and the 3,755 level-1 (most common) hanzi, rows 16-55;
    - JIS X 0208 (``euc_jp`` codec): the symbol and kana rows 1-8 and the 2,965 level-1 kanji, rows 16-47;
    - Unicode blocks: printable ASCII, Latin-1 Supplement and Latin Extended-A (the accented letters of
      the European languages), General Punctuation, the circled numbers ①-⑳, and the full-width forms.
    """
    chars = (_decoded("gb2312", range(0xA1, 0xAA)) + _decoded("gb2312", range(0xB0, 0xD8))
             + _decoded("euc_jp", range(0xA1, 0xA9)) + _decoded("euc_jp", range(0xB0, 0xD0))
             + _unicode_range(0x21, 0x7E) + _unicode_range(0xA1, 0x17F) + _unicode_range(0x2010, 0x2027)
             + _unicode_range(0x2030, 0x205E) + _unicode_range(0x2460, 0x2473) + _unicode_range(0xFF01, 0xFF5E))
    return "".join(sorted(set(chars) - {"\u00ad"}))  # not the soft hyphen: an invisible format character


def multilingual_corpus() -> tuple[list[str], str]:
    """(lines of text, extra characters): the English corpus of ``--base tiny``, the project's own
    multilingual form text (aetnet/data/corpus_multilingual.txt), and the character inventory that every
    piece vocabulary must hold (:func:`multilingual_charset`)."""
    lines = tiny._corpus_lines()
    lines += [line.strip() for line in (_DATA / "corpus_multilingual.txt").read_text(encoding="utf-8").splitlines()
              if line.strip()]
    return lines, multilingual_charset()


def build_tiny_sentencepiece_tokenizer():
    """A tiny XLM-R-style tokenizer: a Unigram "▁" vocabulary trained offline, as a ``LayoutXLMTokenizer``
    (word boxes in, one box per token and first-subword labels out; ``save_pretrained`` writes tokenizer.json)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import LayoutXLMTokenizer

    lines, charset = multilingual_corpus()
    unigram = Tokenizer(models.Unigram())
    # The same text handling LayoutXLMTokenizer builds around the vocabulary (minus XLM-R's precompiled map).
    unigram.normalizer = normalizers.Sequence([normalizers.Strip(left=False, right=True),
                                               normalizers.Replace(Regex(" {2,}"), "▁")])
    unigram.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    alphabet = sorted(set(charset) | set("".join(lines)) - {" "})
    trainer = trainers.UnigramTrainer(vocab_size=TINY_SP_VOCAB, special_tokens=SP_SPECIAL_TOKENS,
                                      unk_token="<unk>", initial_alphabet=alphabet, max_piece_length=8,
                                      show_progress=False)
    unigram.train_from_iterator(lines, trainer)
    import json

    vocab = [(piece, float(score)) for piece, score in json.loads(unigram.to_str())["model"]["vocab"]]
    if [piece for piece, _ in vocab[:4]] != SP_SPECIAL_TOKENS:
        raise AetnetError("the tiny SentencePiece vocabulary lost XLM-R's special-token order; rebuild it")
    return LayoutXLMTokenizer(vocab=vocab, model_max_length=tiny.TINY_MAX_TOKENS)


def _seeded(seed: int, build: Callable[[], None]) -> None:
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        build()
    finally:
        torch.random.set_rng_state(state)


def build_tiny_layoutlmv3_chinese(out_dir: str | Path, seed: int = 0) -> Path:
    """Write ``model/`` (a tiny LayoutLMv3 + SentencePiece tokenizer + LayoutLMv3 image processor, like
    ``microsoft/layoutlmv3-base-chinese``), ``image_aligner/`` (tiny ViT) and ``text_aligner/`` (a tiny
    ``XLMRobertaModel`` over the same vocabulary, the stand-in for ``xlm-roberta-base``)."""
    from transformers import (
        LayoutLMv3ImageProcessorPil,
        LayoutLMv3Model,
        ViTModel,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    out_dir = Path(out_dir)
    tokenizer = build_tiny_sentencepiece_tokenizer()
    cfg_l, cfg_v, cfg_r = tiny._tiny_configs(tokenizer)
    cfg_x = XLMRobertaConfig(**{k: v for k, v in cfg_r.to_dict().items()
                                if k not in ("model_type", "architectures", "transformers_version")})

    def build():
        layoutlmv3 = LayoutLMv3Model(cfg_l)
        with torch.no_grad():  # see tiny.build_tiny_base: zero visual CLS/positions starve training
            torch.nn.init.trunc_normal_(layoutlmv3.cls_token, std=0.02)
            torch.nn.init.trunc_normal_(layoutlmv3.pos_embed, std=0.02)
        layoutlmv3.save_pretrained(out_dir / "model")
        ViTModel(cfg_v, add_pooling_layer=False).save_pretrained(out_dir / "image_aligner")
        XLMRobertaModel(cfg_x, add_pooling_layer=False).save_pretrained(out_dir / "text_aligner")

    _seeded(seed, build)
    LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": tiny.TINY_IMAGE, "width": tiny.TINY_IMAGE}
                                ).save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "text_aligner")
    return out_dir


def build_tiny_lilt(out_dir: str | Path, seed: int = 0) -> Path:
    """Write ``model/``: a tiny ``LiltModel`` with the byte-level BPE tokenizer of ``--base tiny``
    (like ``SCUT-DLVCLab/lilt-roberta-en-base``: RoBERTa's tokenizer, no image processor)."""
    from transformers import LiltConfig, LiltModel

    out_dir = Path(out_dir)
    tokenizer = tiny.build_tiny_tokenizer()
    config = LiltConfig(
        vocab_size=len(tokenizer), hidden_size=TINY_LILT_HIDDEN, num_hidden_layers=tiny.TINY_LAYERS,
        num_attention_heads=tiny.TINY_HEADS, intermediate_size=TINY_LILT_HIDDEN * 2,
        max_position_embeddings=tiny.TINY_MAX_TOKENS + 2, max_2d_position_embeddings=1024,
        channel_shrink_ratio=4, type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    _seeded(seed, lambda: LiltModel(config, add_pooling_layer=False).save_pretrained(out_dir / "model"))
    tokenizer.save_pretrained(out_dir / "model")
    return out_dir


#: ``--base`` name -> builder of the stand-in's folder.
TINY_BASES: dict[str, Callable[[Path], Path]] = {
    "tiny-layoutlmv3-chinese": build_tiny_layoutlmv3_chinese,
    "tiny-lilt": build_tiny_lilt,
}


def ensure_tiny_base(name: str) -> Path:
    """The cached folder of the stand-in ``name`` (``tiny-layoutlmv3-chinese``, ``tiny-lilt``), built on
    first use (atomically: a temp folder, then rename). Its base is ``model/``; the Chinese one also has
    ``image_aligner/`` and ``text_aligner/``."""
    if name not in TINY_BASES:
        raise AetnetError(f"unknown tiny base {name!r}; choose tiny, {', '.join(TINY_BASES)}")
    target = tiny.cache_root() / f"{name}-{TINY_BASES_VERSION}"
    if (target / "model" / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        TINY_BASES[name](tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: its copy is identical (same seed and corpus)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built the offline stand-in %s in %s", name, target)
    return target


def resolve_tiny_base(name: str) -> tuple[str, str | None, str | None]:
    """(base, image aligner, text aligner) folders of a ``tiny-*`` stand-in (aligners ``None`` without AET)."""
    root = ensure_tiny_base(name)
    image, text = root / "image_aligner", root / "text_aligner"
    return (str(root / "model"), str(image) if image.is_dir() else None, str(text) if text.is_dir() else None)
