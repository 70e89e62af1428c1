"""Loading the LayoutLMv3 processor (tokenizer + image processor) of a base or model folder.

It lives in the data layer because encoding, tuning strategies, inspection and training all need it,
and lower layers must not import the training runner.
"""

from __future__ import annotations

import warnings

from aetnet.errors import AetnetError


def load_processor(path: str):
    """The LayoutLMv3 processor of a base or model folder, with the built-in OCR turned off."""
    from transformers import LayoutLMv3Processor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            processor = LayoutLMv3Processor.from_pretrained(path, apply_ocr=False)
    except (OSError, ValueError) as exc:  # HFValidationError is a ValueError
        raise AetnetError(
            f"could not load the LayoutLMv3 processor from '{path}' ({str(exc).splitlines()[0][:160]}); "
            "pass a local folder, `--base tiny` offline, or connect to the Hugging Face hub"
        ) from None
    processor.image_processor.apply_ocr = False
    return processor
