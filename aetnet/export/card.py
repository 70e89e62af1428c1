"""The model card of an export: a Hub-ready ``README.md`` written with ``huggingface_hub.ModelCard``.

The YAML front matter carries what the Hub shows and leaderboards read:

- ``license``: derived from the base weights and the data terms by :func:`card_licence`. A
  LayoutLMv3 derivative inherits CC BY-NC-SA 4.0 (``cc-by-nc-sa-4.0``), a LiLT one MIT (the base family's
  licence, :mod:`aetnet.bases`); data under a licence the
  base's terms already satisfy (CORD, CC BY 4.0) or your own data keep it; data under terms of their
  own (FUNSD's non-commercial research use, RVL-CDIP's and DocVQA's research-use terms) conflict with
  a single SPDX-style id, so the card says ``license: other`` with a ``license_name`` naming both;
- ``base_model``, ``datasets`` (Hub dataset ids of the benchmark; none for the synthetic demo or your
  own pages), ``metrics``, ``pipeline_tag``, ``library_name: aetnet`` and tags (``layoutlmv3``,
  ``document-ai``, the task, the strategy);
- ``model-index``: the run's test metrics (``metrics.json``) as ``EvalResult`` entries;

then the text: task, data, metrics table, usage (a folder or a Hub id) and the licence terms.
"""

from __future__ import annotations

from typing import Any

from aetnet.bases import LAYOUTLMV3_TERMS, TINY_TERMS, base_family, is_tiny
from aetnet.bases import base_licence as base_licence_of

#: Licence of the base weights: the base family's (:mod:`aetnet.bases`): Microsoft's LayoutLMv3
#: checkpoints are CC BY-NC-SA 4.0 and so is every model fine-tuned from them; LiLT's are MIT; aetnet's
#: tiny stand-ins (``tiny``, ``tiny-*``) are its own randomly initialised models.
LAYOUTLMV3_LICENCE = LAYOUTLMV3_TERMS.id
TINY_LICENCE = TINY_TERMS.id

BASE_LICENCE = LAYOUTLMV3_TERMS.text


class DataTerms:
    """The terms of a benchmark's data: a Hub licence id when it has a standard one (else ``None``),
    whether commercial use is excluded, the Hub dataset id and a sentence for the card."""

    def __init__(self, licence: str | None, non_commercial: bool, dataset: str, name: str, text: str):
        self.licence, self.non_commercial, self.dataset, self.name, self.text = (
            licence, non_commercial, dataset, name, text)


_FUNSD = DataTerms(None, True, "nielsr/funsd-layoutlmv3", "FUNSD",
                   "FUNSD (Jaume et al., 2019): non-commercial research and educational use only.")
DATA_TERMS: dict[str, DataTerms] = {
    "funsd": _FUNSD,
    "funsd-re": _FUNSD,
    "cord": DataTerms("cc-by-4.0", False, "naver-clova-ix/cord-v2", "CORD",
                      "CORD (Park et al., 2019): CC BY 4.0 (attribution required)."),
    "rvl-cdip": DataTerms(None, True, "aharley/rvl_cdip", "RVL-CDIP",
                          "RVL-CDIP (Harley et al., 2015): research use, under the terms of the IIT-CDIP / "
                          "Legacy Tobacco Document Library collections it is drawn from."),
    "docvqa": DataTerms(None, True, "lmms-lab/DocVQA", "DocVQA",
                        "DocVQA (Mathew et al., 2021): research use under the terms of the DocVQA challenge "
                        "(rrc.cvc.uab.es); the pages come from the UCSF Industry Documents Library."),
}

#: Hub pipeline tag per model kind (relation extraction has no tag of its own on the Hub).
PIPELINE_TAGS = {"token": "token-classification", "sequence": "text-classification",
                 "qa": "document-question-answering", "relation": "token-classification"}
#: Headline metrics of ``metrics.json`` that go into the model-index: key -> (Hub metric type, name).
CARD_METRICS = {"f1": ("f1", "F1"), "precision": ("precision", "Precision"), "recall": ("recall", "Recall"),
                "accuracy": ("accuracy", "Accuracy"), "macro_f1": ("f1", "Macro F1"),
                "anls": ("anls", "ANLS"), "exact_match": ("exact_match", "Exact match")}


def card_licence(base: str, task: str, demo: bool = False) -> dict[str, str]:
    """The ``license`` (and ``license_name``) of a model fine-tuned from ``base`` on ``task``'s data.

    Returns:
        ``{"license": id}`` when one Hub licence id covers both the base and the data, else
        ``{"license": "other", "license_name": ...}`` naming both terms.
    """
    base_licence = base_licence_of(base).id
    terms = None if demo else DATA_TERMS.get(task)
    if terms is None or terms.licence == base_licence:
        return {"license": base_licence}
    if terms.licence == "cc-by-4.0":
        return {"license": base_licence}  # CC BY data allows any use with attribution: the base's terms govern
    slug = terms.name.lower().replace(" ", "-")
    return {"license": "other", "license_name": f"{base_licence}-and-{slug}-terms"}


LICENCE_FILE = "LICENSE.md"


def licence_file(meta: dict[str, Any], demo: bool = False) -> str | None:
    """The text of ``LICENSE.md`` for a card whose licence is ``other`` (the card's ``license_link``):
    the base's licence and the data's terms, both of which apply; ``None`` when one licence id covers both."""
    base, task = str(meta.get("base", "")), meta.get("task", "")
    licence = card_licence(base, task, demo)
    if licence["license"] != "other":
        return None
    terms = DATA_TERMS[task]
    base_text = base_licence_of(base).text
    return (f"# {licence['license_name']}\n\nThis model is covered by two sets of terms, and both apply:\n\n"
            f"- the base weights (`{base}`): {base_text}\n- the training data: {terms.text}\n"
            + ("\nIn particular, it may not be used commercially.\n" if terms.non_commercial else ""))


def card_metadata(meta: dict[str, Any], metrics: dict[str, Any], demo: bool = False):
    """The ``ModelCardData`` of an export (front matter); ``demo``: trained on aetnet's synthetic pages."""
    from huggingface_hub import EvalResult, ModelCardData

    task, kind = meta.get("task", "unknown"), meta.get("kind", "token")
    strategy = meta.get("merged_from") or meta.get("strategy", "unknown")
    base = str(meta.get("base", ""))
    terms = None if demo else DATA_TERMS.get(task)
    pipeline = PIPELINE_TAGS.get(kind, "token-classification")
    dataset_type = terms.dataset if terms else ("aetnet-demo" if demo else "own-pages")
    dataset_name = terms.name if terms else (f"aetnet synthetic {task} demo" if demo else f"own {task} pages")
    split = str(metrics.get("eval_split") or "test")
    results = [
        EvalResult(task_type=pipeline, dataset_type=dataset_type, dataset_name=dataset_name,
                   dataset_split=split, metric_type=hub_type, metric_name=name, metric_value=float(metrics[key]))
        for key, (hub_type, name) in CARD_METRICS.items()
        if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool)
    ]
    family = base_family(base)
    tags = [family.model_type if family else "layoutlmv3", "document-ai", task, strategy, "aetnet"]
    if kind == "relation":
        tags.append("relation-extraction")
    if demo:
        tags.append("synthetic-data")
    return ModelCardData(
        library_name="aetnet",
        base_model=None if not base or is_tiny(base) else base,
        datasets=[terms.dataset] if terms else None,
        metrics=sorted({hub_type for key, (hub_type, _) in CARD_METRICS.items() if key in metrics}) or None,
        pipeline_tag=pipeline,
        tags=tags,
        model_name=f"aetnet-{task}-{strategy}",
        eval_results=results or None,
        **card_licence(base, task, demo),
        **({"license_link": LICENCE_FILE} if licence_file(meta, demo) else {}),
    )


def card_text(meta: dict[str, Any], metrics: dict[str, Any], demo: bool = False) -> str:
    """The Markdown body: task, data, metrics, base, OCR settings, usage and licences."""
    from aetnet.export.folder import onnx_inputs
    from aetnet.inference.backends import ONNX_FILE, ONNX_INT8_FILE

    task, kind = meta.get("task", "?"), meta.get("kind", "?")
    strategy = meta.get("strategy", "?")
    if meta.get("merged_from"):
        strategy = f"{meta['merged_from']} (LoRA merged into the weights)"
    ocr = meta.get("ocr") or {}
    lines = [
        f"# aetnet {task} model", "",
        f"LayoutLMv3 fine-tuned with aetnet for **{task}** ({kind} task), "
        f"tuning strategy **{strategy}**.", "",
        "| field | value |", "|---|---|",
        f"| base | `{meta.get('base', '?')}` |",
        f"| data | {'synthetic demo pages rendered by aetnet' if demo else task} |",
        f"| labels | {', '.join(meta.get('labels') or []) or '-'} |",
        f"| box level | {meta.get('box_level', '?')} |",
        f"| window | {meta.get('max_length', '?')} tokens, stride {meta.get('stride', '?')} |",
        f"| OCR | {ocr.get('engine', 'tesseract')}, lang {ocr.get('lang', '?')}, psm {ocr.get('psm', '?')} |",
        "", "## Metrics", "",
    ]
    scalars = {k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float))}
    if scalars:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in scalars.items()]
    else:
        lines.append("No metrics.json was found in the run folder.")
    cls = {"token": "AutoModelForTokenClassification", "sequence": "AutoModelForSequenceClassification",
           "qa": "AutoModelForQuestionAnswering"}.get(kind, "AutoModel")
    lines += [
        "", "## Usage", "",
        "`THIS_MODEL` is this folder, or its Hub id (`OWNER/NAME`, downloaded into the Hugging Face cache "
        "once; add `--revision BRANCH` / `revision=` for another branch).", "",
        "```python", "import aetnet", "model = aetnet.load('THIS_MODEL')",
        "from aetnet.predict.predictor import Predictor",
        "pages = Predictor('THIS_MODEL').predict_file('scan.pdf')", "```", "",
        "or `aetnet predict THIS_MODEL scan.pdf --output predictions/`.",
    ]
    if meta.get("strategy") in ("full", "head"):
        family = base_family(str(meta.get("base", "")))
        relation = family.heads["relation"] if family else "LayoutLMv3ForRelationExtraction"
        lines.append(f"The weights also load with `transformers.{cls}.from_pretrained('THIS_MODEL')`."
                     if kind != "relation" else "The weights load with "
                     f"`aetnet.models.relation.{relation}.from_pretrained('THIS_MODEL')`; "
                     "key-value pairs: `aetnet predict --entities TOKEN_MODEL --links THIS_MODEL scan.pdf`.")
    if "onnx" in meta:
        inputs = meta["onnx"].get("inputs") or onnx_inputs(kind)
        lines.append(f"`{ONNX_FILE}` takes {', '.join(inputs)} (dynamic batch, sequence and entity "
                     f"axes) and returns {', '.join(meta['onnx']['outputs'])}; max |ONNX - PyTorch| = "
                     f"{meta['onnx']['max_abs_diff']:.2e}.")
        if "int8" in meta["onnx"]:
            lines.append(f"`{ONNX_INT8_FILE}` is the same graph with dynamic int8 quantisation "
                         f"(max |int8 - PyTorch| = {meta['onnx']['int8']['max_abs_diff']:.2e} on random inputs).")
    base = str(meta.get("base", ""))
    lines += ["", "## Licences", ""]
    if is_tiny(base):
        lines.append(f"- Base `{base}`: a randomly initialised tiny test model of aetnet (no third-party weights, "
                     "Apache-2.0); not meant for real use.")
    else:
        lines.append(f"- Base `{base}` (licence `{base_licence_of(base).id}`): {base_licence_of(base).text}")
    terms = DATA_TERMS.get(task)
    if demo:
        lines.append("- Data: synthetic pages rendered by aetnet (no third-party data).")
    else:
        lines.append(f"- Data: {terms.text if terms else f'check the licence of the {task} data before use.'}")
    licence = card_licence(base, task, demo)
    if licence["license"] == "other":
        lines.append(f"- The card's licence is `other` (`{licence['license_name']}`): the base's licence and the "
                     "data's own terms both apply.")
    lines.append("- Check both before any use of this model outside research.")
    return "\n".join(lines) + "\n"


def model_card(meta: dict[str, Any], metrics: dict[str, Any], demo: bool = False) -> str:
    """The README of an export: YAML front matter (see the module docstring), then the text."""
    from huggingface_hub import ModelCard

    data = card_metadata(meta, metrics, demo)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text(meta, metrics, demo)}"))
