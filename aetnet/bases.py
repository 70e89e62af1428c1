"""The base-model contract: what each family of base weights gives the rest of aetnet.

One :class:`BaseFamily` per family says how its words become tokens (tokenizer family, box-aware
tokenizer class, which subword carries the label), whether it has an image input (and its image
processor), which strategies it supports, the default AET aligners, the licence a model card must carry,
and which classes hold its task heads. :func:`detect_family` tells the family of a folder or hub id
from its ``config.json`` (``model_type``) and its tokenizer files, so the loaders (processor, task
models, aligners, model card) read the family instead of assuming LayoutLMv3-English.

Families:

- ``layoutlmv3``: ``microsoft/layoutlmv3-base``/``-large``: byte-level BPE with a prefix space (RoBERTa's),
  224 px image patches, every strategy, aligners ``facebook/deit-base-patch16-224`` + ``roberta-base``.
- ``layoutlmv3-chinese``: ``microsoft/layoutlmv3-base-chinese`` or any LayoutLMv3 whose folder ships an
  XLM-R tokenizer (``sentencepiece.bpe.model``, a Unigram ``tokenizer.json`` or an XLM-R/LayoutXLM
  ``tokenizer_class``): SentencePiece "▁" pieces read by ``LayoutXLMTokenizer`` (word boxes, first-subword
  labels), LayoutLMv3's image processor, every strategy; the text aligner shares the vocabulary:
  ``xlm-roberta-base``.
- ``lilt``: any ``LiltModel`` (``SCUT-DLVCLab/lilt-roberta-en-base`` with RoBERTa's BPE,
  ``nielsr/lilt-xlm-roberta-base`` with XLM-R's SentencePiece): text and layout only, no image stream,
  so no AET; ``full``, ``lora``, ``prompt`` and ``head``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aetnet.errors import AetnetError

#: Tokenizer families: how a word is cut into subwords.
BPE = "bpe"  # byte-level BPE with a prefix space (RoBERTa, LayoutLMv3)
SENTENCEPIECE = "sentencepiece"  # SentencePiece pieces marked with "▁" (XLM-R, LayoutXLM)
WORDPIECE = "wordpiece"  # BERT's "##" continuation pieces (LayoutLM v1/v2: detected, not supported)

#: The box-aware tokenizer class (transformers) that reads each tokenizer family: both take
#: ``tokenizer(words, boxes=...)`` and give ``bbox`` and ``word_ids()`` per token.
BOX_TOKENIZERS = {BPE: "LayoutLMv3Tokenizer", SENTENCEPIECE: "LayoutXLMTokenizer"}

#: Every registered strategy, the built-in ones and any a user registers (a family with an image stream runs them all).
ALL_STRATEGIES = None
TEXT_STRATEGIES = ("full", "head", "lora", "prompt")


@dataclass(frozen=True)
class Licence:
    """A Hub licence id and the sentence a model card writes about it."""

    id: str
    text: str


LAYOUTLMV3_TERMS = Licence(
    "cc-by-nc-sa-4.0",
    "The Microsoft LayoutLMv3 checkpoints (`microsoft/layoutlmv3-*`) are released under CC BY-NC-SA 4.0: "
    "a model fine-tuned from them inherits non-commercial use and share-alike terms.",
)
LILT_TERMS = Licence(
    "mit",
    "The LiLT checkpoints (`SCUT-DLVCLab/lilt-roberta-en-base`, `nielsr/lilt-xlm-roberta-base`) are released "
    "under the MIT licence (their RoBERTa / XLM-R text weights too): commercial use is allowed.",
)
TINY_TERMS = Licence("apache-2.0", "aetnet's tiny test model: Apache-2.0.")


@dataclass(frozen=True)
class BaseFamily:
    """Everything aetnet needs to know about one family of base weights.

    Attributes:
        name: the family name (``layoutlmv3``, ``layoutlmv3-chinese``, ``lilt``).
        model_type: ``config.json``'s ``model_type``.
        tokenizer: ``bpe`` or ``sentencepiece`` (see :data:`BOX_TOKENIZERS`).
        label_subword: which subword of a word carries its label (``first``; the others get -100).
        image_processor: the transformers image-processor class, or ``None`` for a text+layout model
            (no ``pixel_values`` anywhere: datasets, collators, predict, export).
        backbone: the attribute of a task model holding the backbone (``layoutlmv3``, ``lilt``).
        heads: task kind -> head class name (``relation`` is aetnet's own, in :mod:`aetnet.models.relation`).
        strategies: the ``--strategy`` names this family supports (``None``: every registered strategy).
        aligners: AET's default (image, text) aligners; ``None`` without AET.
        licence: the licence of the published checkpoints of this family.
        languages: a word for the docs' table of bases.
        unsupported: why a strategy outside ``strategies`` cannot run, and what to use instead.
    """

    name: str
    model_type: str
    tokenizer: str
    image_processor: str | None
    backbone: str
    heads: dict[str, str]
    strategies: tuple[str, ...] | None
    aligners: tuple[str, str] | None
    licence: Licence
    languages: str
    label_subword: str = "first"
    unsupported: str = ""
    hub_ids: tuple[str, ...] = field(default=())

    @property
    def has_image(self) -> bool:
        """Whether the model reads a page image (``pixel_values``)."""
        return self.image_processor is not None

    @property
    def box_tokenizer(self) -> str:
        """The transformers tokenizer class that cuts words with boxes for this family."""
        return BOX_TOKENIZERS[self.tokenizer]

    def check_strategy(self, strategy: str) -> None:
        """Raise one clear sentence when ``strategy`` cannot run on this family."""
        if self.strategies is not None and strategy not in self.strategies:
            raise AetnetError(
                f"--strategy {strategy} does not work with a {self.name} base: {self.unsupported} "
                f"use one of {', '.join(self.strategies)} instead"
            )


_LAYOUTLMV3_HEADS = {"token": "LayoutLMv3ForTokenClassification",
                     "sequence": "LayoutLMv3ForSequenceClassification",
                     "qa": "LayoutLMv3ForQuestionAnswering",
                     "relation": "LayoutLMv3ForRelationExtraction"}

LAYOUTLMV3 = BaseFamily(
    name="layoutlmv3", model_type="layoutlmv3", tokenizer=BPE, image_processor="LayoutLMv3ImageProcessor",
    backbone="layoutlmv3", heads=_LAYOUTLMV3_HEADS, strategies=ALL_STRATEGIES,
    aligners=("facebook/deit-base-patch16-224", "roberta-base"), licence=LAYOUTLMV3_TERMS,
    languages="English", hub_ids=("microsoft/layoutlmv3-base", "microsoft/layoutlmv3-large"),
)
LAYOUTLMV3_CHINESE = BaseFamily(
    name="layoutlmv3-chinese", model_type="layoutlmv3", tokenizer=SENTENCEPIECE,
    image_processor="LayoutLMv3ImageProcessor", backbone="layoutlmv3", heads=_LAYOUTLMV3_HEADS,
    strategies=ALL_STRATEGIES, aligners=("facebook/deit-base-patch16-224", "xlm-roberta-base"),
    licence=LAYOUTLMV3_TERMS, languages="Chinese (XLM-R vocabulary: any language)",
    hub_ids=("microsoft/layoutlmv3-base-chinese",),
)
LILT = BaseFamily(
    name="lilt", model_type="lilt", tokenizer=BPE, image_processor=None, backbone="lilt",
    heads={"token": "LiltForTokenClassification", "sequence": "LiltForSequenceClassification",
           "qa": "LiltForQuestionAnswering", "relation": "LiltForRelationExtraction"},
    strategies=TEXT_STRATEGIES, aligners=None, licence=LILT_TERMS,
    languages="English (RoBERTa) or any (XLM-R)",
    unsupported="LiLT has no image stream, and AET aligns image and text features;",
    hub_ids=("SCUT-DLVCLab/lilt-roberta-en-base", "nielsr/lilt-xlm-roberta-base"),
)
#: LiLT over XLM-R's SentencePiece vocabulary: the same family, another tokenizer.
LILT_SENTENCEPIECE = BaseFamily(**{**LILT.__dict__, "tokenizer": SENTENCEPIECE, "hub_ids": ()})

FAMILIES: dict[str, BaseFamily] = {f.name: f for f in (LAYOUTLMV3, LAYOUTLMV3_CHINESE, LILT)}


def _read_json(path: str, name: str) -> dict | None:
    """``name`` of a folder or hub id as a dict, ``None`` when it has no such file (or it is unreachable)."""
    folder = Path(path)
    if folder.is_dir():
        file = folder / name
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(path, name, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return json.loads(Path(found).read_text(encoding="utf-8")) if found else None


def _has_file(path: str, name: str) -> bool:
    folder = Path(path)
    if folder.is_dir():
        return (folder / name).is_file()
    try:
        from transformers.utils import cached_file

        return cached_file(path, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False) is not None
    except (OSError, ValueError):
        return False


def tokenizer_family(path: str) -> str:
    """``sentencepiece``, ``wordpiece`` or ``bpe``: what the tokenizer files of ``path`` hold.

    SentencePiece: a ``sentencepiece.bpe.model``, a Unigram ``tokenizer.json`` or a ``tokenizer_class``
    of the XLM-R family (XLM-R, LayoutXLM); WordPiece: a WordPiece ``tokenizer.json`` or a BERT
    ``tokenizer_class``; otherwise byte-level BPE (``vocab.json`` + ``merges.txt``).
    """
    if _has_file(path, "sentencepiece.bpe.model"):
        return SENTENCEPIECE
    for name in ("tokenizer_config.json", "config.json"):
        declared = str((_read_json(path, name) or {}).get("tokenizer_class") or "")
        if "XLMRoberta" in declared or "LayoutXLM" in declared:
            return SENTENCEPIECE
        if declared.startswith(("Bert", "LayoutLMTokenizer", "LayoutLMv2")):
            return WORDPIECE
    model = ((_read_json(path, "tokenizer.json") or {}).get("model") or {}).get("type")
    if model == "Unigram":
        return SENTENCEPIECE
    if model == "WordPiece":
        return WORDPIECE
    return BPE


def base_config(path: str) -> dict | None:
    """The ``config.json`` of a base, a model folder (a LoRA folder keeps it in ``base/``) or a hub id."""
    config = _read_json(path, "config.json")
    if config is None and (Path(path) / "base" / "config.json").is_file():  # a LoRA model folder: base/ + adapter/
        config = _read_json(str(Path(path) / "base"), "config.json")
    return config


def detect_family(path: str) -> BaseFamily:
    """The family of a base or model folder, or of a hub id, from ``config.json`` and its tokenizer files.

    Raises:
        AetnetError: no ``config.json``, a ``model_type`` aetnet has no family for, or a WordPiece tokenizer.
    """
    config = base_config(path)
    if config is None:
        raise AetnetError(
            f"'{path}' has no config.json (or the hub cannot be reached); pass a model folder, a hub id "
            "such as microsoft/layoutlmv3-base, or `--base tiny` offline"
        )
    model_type = config.get("model_type")
    tokenizer = tokenizer_family(path)
    if tokenizer == WORDPIECE:
        raise AetnetError(f"'{path}' ships a WordPiece tokenizer (LayoutLM v1/v2); aetnet reads LayoutLMv3 and "
                          "LiLT bases: pass one of " + ", ".join(i for f in FAMILIES.values() for i in f.hub_ids))
    if model_type == "layoutlmv3":
        return LAYOUTLMV3_CHINESE if tokenizer == SENTENCEPIECE else LAYOUTLMV3
    if model_type == "lilt":
        return LILT_SENTENCEPIECE if tokenizer == SENTENCEPIECE else LILT
    raise AetnetError(
        f"'{path}' holds a {model_type!r} model (config.json model_type); aetnet's bases are "
        f"{', '.join(sorted({f.model_type for f in FAMILIES.values()}))}: pass one of "
        + ", ".join(i for f in FAMILIES.values() for i in f.hub_ids)
    )


#: The family each offline stand-in stands in for (see :mod:`aetnet.models.tiny_bases`).
TINY_FAMILIES = {"tiny": "layoutlmv3", "tiny-layoutlmv3-chinese": "layoutlmv3-chinese", "tiny-lilt": "lilt"}


def is_tiny(base: str) -> bool:
    """Whether ``base`` names one of aetnet's offline stand-ins (``tiny`` or a ``tiny-*`` name)."""
    return base in TINY_FAMILIES


def base_family(base: str) -> BaseFamily | None:
    """The family of the base a model was fine-tuned from (a tiny name, hub id or folder), ``None`` when it
    cannot be told (a folder gone since training, a hub id out of reach)."""
    if base in TINY_FAMILIES:
        return FAMILIES[TINY_FAMILIES[base]]
    for family in FAMILIES.values():
        if base in family.hub_ids:
            return family
    try:
        return detect_family(base)
    except AetnetError:
        return None


def base_licence(base: str) -> Licence:
    """The licence of the base weights a model was fine-tuned from (a tiny name, hub id or folder).

    aetnet's tiny stand-ins are Apache-2.0; a known hub id or a readable folder gives its family's
    licence; anything else (a folder gone since training) is taken as LayoutLMv3's, the strictest terms.
    """
    if is_tiny(base):
        return TINY_TERMS
    family = base_family(base)
    return family.licence if family is not None else LAYOUTLMV3_TERMS

#: ``model.text_aligner``'s default (:class:`aetnet.config.settings.ModelConfig`; a test keeps them equal).
RECIPE_TEXT_ALIGNER = "roberta-base"


def default_aligners(base: str, image_aligner: str | None, text_aligner: str | None) -> tuple[str | None, str | None]:
    """The aligners a run uses: the recipe's, except that the recipe default text aligner (``roberta-base``,
    English byte-level BPE) becomes the family's own when the base has another vocabulary (LayoutLMv3-Chinese:
    ``xlm-roberta-base``), since the text aligner reads the base's ``input_ids``."""
    if text_aligner != RECIPE_TEXT_ALIGNER:
        return image_aligner, text_aligner
    try:
        family = detect_family(base)
    except AetnetError:  # unreadable here: the loaders report it
        return image_aligner, text_aligner
    if family.aligners is None:
        return image_aligner, text_aligner
    return image_aligner, family.aligners[1]
