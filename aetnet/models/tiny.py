"""``--base tiny``: a small, deterministic LayoutLMv3 (plus aligners) built offline.

Nothing can be downloaded in tests or on an air-gapped machine, so the tiny base is built from
scratch: a byte-level BPE vocabulary trained on text the project ships (``aetnet/data/corpus.txt``),
a LayoutLMv3 tokenizer and processor around it, and seeded random weights. Everything is written
with ``save_pretrained`` into a cache folder and then loaded back through the very same
``from_pretrained`` calls as a hub model, so the tiny path exercises the real loading code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TINY_VERSION = "v2"
#: Sizes of the tiny models: small enough for a CPU test, shaped like the real thing.
TINY_HIDDEN = 64
TINY_LAYERS = 2
TINY_HEADS = 2
TINY_IMAGE = 64
TINY_PATCH = 16
TINY_MAX_TOKENS = 512
TINY_VOCAB = 1200
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def cache_root() -> Path:
    """``$AETNET_CACHE`` or ``~/.cache/aetnet``."""
    return Path(os.environ.get("AETNET_CACHE", Path.home() / ".cache" / "aetnet"))


def _corpus_lines() -> list[str]:
    corpus = Path(__file__).resolve().parent.parent / "data" / "corpus.txt"
    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def build_tiny_tokenizer():
    """Train the byte-level BPE vocabulary on the shipped corpus and wrap it as a LayoutLMv3 tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LayoutLMv3Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus_lines(), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return LayoutLMv3Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=TINY_MAX_TOKENS)


def _tiny_configs(tokenizer):
    from transformers import LayoutLMv3Config, RobertaConfig, ViTConfig

    vocab = len(tokenizer)
    common = dict(
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=TINY_HEADS,
        intermediate_size=TINY_HIDDEN * 2,
    )
    # LayoutLMv3 concatenates 4 coordinate and 2 shape embeddings: they must add up to hidden_size.
    coordinate = (TINY_HIDDEN + 5) // 6
    shape = (TINY_HIDDEN - 4 * coordinate) // 2
    layoutlmv3 = LayoutLMv3Config(
        vocab_size=vocab,
        max_position_embeddings=TINY_MAX_TOKENS + 2,
        max_2d_position_embeddings=1024,
        coordinate_size=coordinate,
        shape_size=shape,
        input_size=TINY_IMAGE,
        patch_size=TINY_PATCH,
        rel_pos_bins=32,
        max_rel_pos=128,
        rel_2d_pos_bins=64,
        max_rel_2d_pos=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **common,
    )
    vit = ViTConfig(
        image_size=TINY_IMAGE,
        patch_size=TINY_PATCH,
        num_channels=3,
        layer_norm_eps=1e-6,
        **{**common, "num_hidden_layers": 1},
    )
    roberta = RobertaConfig(
        vocab_size=vocab,
        max_position_embeddings=TINY_MAX_TOKENS + 2,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **{**common, "num_hidden_layers": 1},
    )
    return layoutlmv3, vit, roberta


def build_tiny_base(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny base into ``out_dir``: ``layoutlmv3/``, ``image_aligner/``, ``text_aligner/``.

    ``layoutlmv3/`` holds the model, tokenizer and processor, like a hub LayoutLMv3 checkpoint.
    """
    from transformers import (
        LayoutLMv3ImageProcessorPil,
        LayoutLMv3Model,
        LayoutLMv3Processor,
        RobertaModel,
        ViTModel,
    )

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer()
    processor = LayoutLMv3Processor(
        image_processor=LayoutLMv3ImageProcessorPil(
            apply_ocr=False, size={"height": TINY_IMAGE, "width": TINY_IMAGE}
        ),
        tokenizer=tokenizer,
    )
    cfg_l, cfg_v, cfg_r = _tiny_configs(tokenizer)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        layoutlmv3 = LayoutLMv3Model(cfg_l)
        # transformers initialises the visual CLS token and position embeddings to zeros; the
        # visual CLS then enters LayerNorm(eps=1e-6) as a constant vector, whose gradient is scaled
        # by 1/sqrt(eps) = 1000 and, after clipping, starves every other parameter. Pretrained
        # checkpoints have trained values there; give the tiny model small random ones (as ViT does).
        with torch.no_grad():
            torch.nn.init.trunc_normal_(layoutlmv3.cls_token, std=0.02)
            torch.nn.init.trunc_normal_(layoutlmv3.pos_embed, std=0.02)
        layoutlmv3.save_pretrained(out_dir / "layoutlmv3")
        ViTModel(cfg_v, add_pooling_layer=False).save_pretrained(out_dir / "image_aligner")
        RobertaModel(cfg_r, add_pooling_layer=False).save_pretrained(out_dir / "text_aligner")
    finally:
        torch.random.set_rng_state(state)
    processor.save_pretrained(out_dir / "layoutlmv3")
    tokenizer.save_pretrained(out_dir / "text_aligner")
    return out_dir


def ensure_tiny_base() -> Path:
    """The cached tiny base folder, built on first use (atomically: temp folder, then rename)."""
    target = cache_root() / f"tiny-base-{TINY_VERSION}"
    if (target / "layoutlmv3" / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        build_tiny_base(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first: its copy is identical (same seed and corpus).
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built the tiny offline base in %s", target)
    return target


def resolve_base(base: str, image_aligner: str | None = None, text_aligner: str | None = None):
    """Map ``--base`` (and aligner names) to loadable ids or paths.

    ``tiny`` (or ``tiny:PATH`` is not needed: a folder works directly) selects the tiny offline base
    and its aligners; ``tiny-layoutlmv3-chinese`` and ``tiny-lilt`` the stand-ins of
    :mod:`aetnet.models.tiny_bases`; any other value is a hub id or local folder returned unchanged, with
    the base family's default text aligner in place of the recipe default
    (:func:`aetnet.bases.default_aligners`).

    Returns:
        ``(base, image_aligner, text_aligner)`` as hub ids or local paths.
    """
    if base == "tiny":
        root = ensure_tiny_base()
        return str(root / "layoutlmv3"), str(root / "image_aligner"), str(root / "text_aligner")
    from aetnet.models.tiny_bases import TINY_BASES, resolve_tiny_base

    if base in TINY_BASES:
        return resolve_tiny_base(base)
    from aetnet.bases import default_aligners

    return (base, *default_aligners(base, image_aligner, text_aligner))
