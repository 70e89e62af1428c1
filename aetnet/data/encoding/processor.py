"""Loading the processor (box-aware tokenizer + image processor) of a base or model folder.

It lives in the data layer because encoding, tuning strategies, inspection and training all need it,
and lower layers must not import the training runner. The base family (:mod:`aetnet.bases`)
decides which tokenizer class cuts the words (``LayoutLMv3Tokenizer`` for byte-level BPE,
``LayoutXLMTokenizer`` for XLM-R's SentencePiece, whatever ``tokenizer_config.json`` declares) and whether
there is an image processor at all (LiLT has none: :class:`TextProcessor`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from aetnet.bases import SENTENCEPIECE, BaseFamily, base_config, detect_family
from aetnet.errors import AetnetError


class TextProcessor:
    """The processor of a text+layout base (LiLT): a box-aware tokenizer and no image processor."""

    image_processor = None

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the tokenizer files into ``folder``."""
        self.tokenizer.save_pretrained(str(folder))


def _load_error(path: str, what: str, exc: Exception) -> AetnetError:
    return AetnetError(
        f"could not load the {what} from '{path}' ({str(exc).splitlines()[0][:160]}); "
        "pass a local folder, `--base tiny` offline, or connect to the Hugging Face hub"
    )


def load_tokenizer(path: str, family: BaseFamily | None = None):
    """The box-aware tokenizer of a base or model folder: ``tokenizer(words, boxes=...)`` gives one box per
    token and ``word_ids()`` (first-subword labels are the encoders' job)."""
    import transformers

    family = family or detect_family(path)
    cls = getattr(transformers, family.box_tokenizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_pretrained(path)
    except ImportError as exc:  # a folder with only sentencepiece.bpe.model and no tokenizer.json
        if family.tokenizer == SENTENCEPIECE:
            raise AetnetError(
                f"'{path}' ships only sentencepiece.bpe.model, whose conversion needs the sentencepiece package; "
                "pip install 'aetnet[multilingual]'"
            ) from None
        raise _load_error(path, "tokenizer", exc) from None
    except (OSError, ValueError) as exc:  # HFValidationError is a ValueError
        raise _load_error(path, "tokenizer", exc) from None


def load_processor(path: str):
    """The processor of a base or model folder, with the built-in OCR turned off.

    LayoutLMv3 families: a ``LayoutLMv3Processor`` holding the family's box-aware tokenizer (so
    ``microsoft/layoutlmv3-base-chinese`` loads its XLM-R tokenizer, not a byte-level BPE one) and
    LayoutLMv3's image processor (its defaults when the folder ships no ``preprocessor_config.json``).
    Text+layout families (LiLT): a :class:`TextProcessor`.
    """
    if base_config(path) is None:
        raise AetnetError(
            f"could not load the LayoutLMv3 processor from '{path}' (no config.json there, or the hub cannot be "
            "reached); pass a local folder, `--base tiny` offline, or connect to the Hugging Face hub"
        )
    family = detect_family(path)
    tokenizer = load_tokenizer(path, family)
    if not family.has_image:
        return TextProcessor(tokenizer)
    from transformers import AutoImageProcessor, LayoutLMv3ImageProcessorPil, LayoutLMv3Processor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                image_processor = AutoImageProcessor.from_pretrained(path, apply_ocr=False)
            except OSError:
                # A base with weights and no preprocessor_config.json (some hub uploads): LayoutLMv3's
                # defaults at the model's own input size.
                from transformers import AutoConfig

                size = AutoConfig.from_pretrained(path).input_size
                image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": size, "width": size})
    except (OSError, ValueError) as exc:
        raise _load_error(path, "LayoutLMv3 image processor", exc) from None
    image_processor.apply_ocr = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LayoutLMv3Processor(image_processor=image_processor, tokenizer=tokenizer)

