"""Predictions on new pages: PNG, JPEG, TIFF or PDF in, one JSON record (and optionally a PNG) per page out.

A :class:`Predictor` wraps any model folder :func:`aetnet.inference.modelio.load_model` can read (a run's
``model/`` or an export; with ``backend="onnx"``/``"onnx-int8"`` an export's ONNX graph, see
:mod:`aetnet.inference.backends`). A page's words come from its PDF text layer when it has a usable one
(``ocr="auto"``, see :mod:`aetnet.data.ocr.pdftext`) or from Tesseract with the OCR settings recorded at
training time; each record names its ``source``. The words go through the same windows as training
(:func:`~aetnet.data.encoding.windows.encode_token_documents`), and the task kind decides the decoding:

- ``token``: a label and score per word, and entities grouped from BIO spans;
- ``sequence``: the class and every class probability, from the page's first window (its first
  ``max_length`` tokens, as in training);
- ``qa``: the best answer span (start <= end, at most :data:`MAX_ANSWER_TOKENS` tokens) over all
  windows, mapped back to words and their boxes.

Example::

    from aetnet.predict.predictor import Predictor
    pages = Predictor("runs/funsd-full/model").predict_file("scan.pdf")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aetnet.data.documents.boxes import line_segments, union_box, union_boxes
from aetnet.data.documents.document import Document, QAExample
from aetnet.data.documents.jsonl import replaced_when_done
from aetnet.data.encoding.qa import decode_spans, encode_qa_examples
from aetnet.data.encoding.windows import (
    Collator,
    Window,
    encode_token_documents,
    merge_token_predictions,
    softmax,
    word_predictions,
)
from aetnet.data.encoding.xfund import ENTITY_TEXT_ENCODING
from aetnet.data.ocr.inputs import PDF_DPI, collect_files, iter_document, load_document
from aetnet.data.ocr.pdftext import OCR_MODES, PdfPage, choose_source
from aetnet.errors import AetnetError, DataError
from aetnet.models.heads import window_outputs
from aetnet.predict.draw import draw_page

logger = logging.getLogger(__name__)

#: Longest answer considered, in tokens (DocVQA answers are short; longer spans are noise).
MAX_ANSWER_TOKENS = 30


def group_entities(words: Sequence[str], boxes: Sequence[Sequence[float]],
                   labels: Sequence[str]) -> list[dict]:
    """Entities from BIO word labels: ``B-X`` opens one, ``I-X`` (or a bare ``X``) continues an open
    ``X`` and otherwise opens one, ``O`` closes.

    Returns:
        ``[{"type", "text", "words": [word indices], "box": union box}]`` in reading order.
    """
    entities: list[dict] = []
    current: dict | None = None
    for i, label in enumerate(labels):
        if label == "O":
            current = None
            continue
        prefix, _, kind = label.partition("-") if label[:2] in ("B-", "I-") else ("I", "", label)
        if prefix == "B" or current is None or current["type"] != kind:
            current = {"type": kind, "words": []}
            entities.append(current)
        current["words"].append(i)
    for ent in entities:
        ent["text"] = " ".join(words[i] for i in ent["words"])
        ent["box"] = union_box([boxes[i] for i in ent["words"]])
    return [{"type": e["type"], "text": e["text"], "words": e["words"], "box": e["box"]} for e in entities]


class Predictor:
    """Predictions from a model folder on page images and files.

    Args:
        model_dir: a run's ``model/`` folder, a run folder or an exported folder.
        device: torch device (``cpu``, ``cuda``).
        dtype: ``float32`` (default) or ``bfloat16`` (halves memory; small score differences).
        batch_size: windows per forward pass.
        ocr_lang: Tesseract language; default the one the model was trained with.
        ocr_psm: Tesseract page segmentation mode; default the training one.
        max_length: window size in tokens; default the training one.
        stride: overlap of consecutive windows in tokens; default the training one.
        box_level: ``segment`` (OCR line fragments stand in for segments) or ``word``; default the
            training one.
        ocr_cache: OCR cache folder (default ``$AETNET_CACHE/ocr``).
        ocr: ``auto`` (PDF pages with a usable text layer are read from it, others OCRed),
            ``always`` (OCR every page) or ``never`` (text layers only; a page without one is an error).
        backend: ``torch``, ``onnx`` (an export's ``model.onnx``) or ``onnx-int8`` (``model.int8.onnx``).
        revision: branch, tag or commit when ``model_dir`` is a Hub id ``OWNER/NAME``.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None,
                 batch_size: int = 8, ocr_lang: str | None = None, ocr_psm: int | None = None,
                 max_length: int | None = None, stride: int | None = None, box_level: str | None = None,
                 ocr_cache: str | Path | None = None, ocr: str = "auto", backend: str = "torch",
                 revision: str | None = None):
        from aetnet.inference.backends import load_backend
        from aetnet.inference.hub import resolve_model

        if ocr not in OCR_MODES:
            raise AetnetError(f"--ocr {ocr} is not a mode; use {', '.join(OCR_MODES)}")
        self.ocr_mode = ocr
        self.dtype = _resolve_dtype(dtype)
        model_dir = resolve_model(model_dir, revision)  # a Hub id: downloaded into (or read from) the Hub cache
        self.model_dir = Path(model_dir)
        self.backend, self.meta, self.processor = load_backend(model_dir, backend, device, self.dtype)
        self.model = self.backend.model  # the PyTorch model (torch backend only; None for ONNX)
        self.kind = self.meta["kind"]
        self.device = torch.device(device)
        self.labels = self.meta.get("labels") or (_config_labels(self.model) if self.model is not None else None)
        self.batch_size = batch_size
        self.max_length = int(max_length or self.meta.get("max_length", 512))
        self.stride = int(self.meta.get("stride", 128) if stride is None else stride)
        self.box_level = box_level or self.meta.get("box_level", "word")
        if self.box_level not in ("segment", "word"):
            raise AetnetError(f"box level '{self.box_level}' is not supported; use segment or word")
        trained = self.meta.get("ocr") or {}
        self.ocr_lang = ocr_lang or trained.get("lang", "eng")
        self.ocr_psm = int(ocr_psm if ocr_psm is not None else trained.get("psm", 3))
        for name, mine, theirs in (("lang", self.ocr_lang, trained.get("lang")),
                                   ("psm", self.ocr_psm, trained.get("psm"))):
            if theirs is not None and str(mine) != str(theirs):
                logger.warning("OCR %s %s differs from the %s the model was trained with; words may be "
                               "read differently than in training", name, mine, theirs)
        self.ocr_cache = ocr_cache
        if self.meta.get("encoding") == ENTITY_TEXT_ENCODING:
            logger.warning("the %s model was trained on the reference XFUND encoding (each entity's text tokenised "
                           "whole); predict and serve tokenise the page word by word, so CJK pages give it other "
                           "tokens than in training: expect lower accuracy than its evaluation",
                           self.meta["task"])

    def ocr(self, image: Image.Image) -> tuple[list[str], list[list[float]]]:
        """Tesseract words and pixel boxes of a page, with this predictor's settings (cached)."""
        from aetnet.data.ocr.tesseract import ocr_image

        return ocr_image(image, lang=self.ocr_lang, psm=self.ocr_psm, cache_dir=self.ocr_cache)

    def page_words(self, image: Image.Image, layer=None,
                   where: str = "page") -> tuple[list[str], list[list[float]], list[int] | None, str]:
        """Words, pixel boxes, line numbers (text layer only) and source (``text-layer`` or ``ocr``) of
        a page, by this predictor's ``ocr`` mode; ``layer`` is the page's PDF text layer, if any."""
        source = choose_source(layer, self.ocr_mode, where)
        if source == "ocr":
            words, boxes = self.ocr(image)
            return words, boxes, None, source
        return list(layer.words), [list(b) for b in layer.boxes], list(layer.lines), source

    def predict_image(self, image: Image.Image | str | Path, question: str | None = None, layer=None,
                      where: str = "page") -> dict[str, Any]:
        """Predict one page (a PIL image, or the first page of a file) from its text layer or OCR."""
        if not isinstance(image, Image.Image):
            first = load_document(image, self.ocr_mode != "always")[0]
            image, layer, where = first.image, first.layer, f"{image} page 1"
        from aetnet.data.ocr.images import upright

        page = upright(image).convert("RGB")  # a phone photo opened as stored: turned by its EXIF tag
        words, boxes, lines, source = self.page_words(page, layer, where)
        return {**self.predict_words(page, words, boxes, question, lines), "source": source}

    def load(self, path: str | Path) -> list[PdfPage]:
        """The pages of a file, with their PDF text layers unless ``ocr`` is ``always``."""
        return load_document(path, text_layer=self.ocr_mode != "always")

    def iter_load(self, path: str | Path) -> Iterator[PdfPage]:
        """:meth:`load` one page at a time (a PDF page is rendered when it is reached)."""
        return iter_document(path, text_layer=self.ocr_mode != "always")

    @property
    def word_reader(self) -> Predictor:
        """The predictor whose OCR settings read the pages' words (itself; a pair predictor's token model)."""
        return self

    def predict_file(self, path: str | Path, question: str | None = None) -> list[dict[str, Any]]:
        """Predict every page of an image or PDF file; one record per page, ``page`` counting from 1."""
        return self.predict_pages(path, self.load(path), question)

    def predict_pages(self, path: str | Path, pages: Sequence[Image.Image | PdfPage],
                      question: str | None = None) -> list[dict[str, Any]]:
        """Predict already loaded pages (images or :class:`PdfPage`) of the file ``path``."""
        pages = [p if isinstance(p, PdfPage) else PdfPage(p, None) for p in pages]
        return [{"file": str(path), "page": number,
                 **self.predict_image(p.image, question, p.layer, f"{path} page {number}")}
                for number, p in enumerate(pages, start=1)]

    def predict_words(self, image: Image.Image, words: list[str], boxes: list[list[float]],
                      question: str | None = None, lines: list[int] | None = None,
                      segments: list[int] | None = None) -> dict[str, Any]:
        """Predict a page whose words and pixel boxes are known (no OCR); ``lines``: optional line
        number per word (segments never span two lines); ``segments``: the page's own segment ids
        (an aetnet pages file), used instead of line fragments.

        Returns:
            ``{"size", "task", "kind", "windows", "words": [{"text", "box", ...}], ...}`` plus, by
            kind, ``entities`` (token), ``label``/``score``/``probabilities`` (sequence) or
            ``question``/``answer`` (qa).
        """
        doc, windows = self.encode(image, words, boxes, question, lines, segments)
        return self.decode(image, doc, windows, self._forward(windows, image), question)

    def encode(self, image: Image.Image, words: list[str], boxes: list[list[float]], question: str | None = None,
               lines: list[int] | None = None, segments: list[int] | None = None) -> tuple[Document, list[Window]]:
        """The page as a document and its model windows (as in training)."""
        if self.kind == "qa" and not question:
            raise AetnetError(f"the {self.meta['task']} model answers questions; pass --question \"...\"")
        if self.kind == "relation":
            raise AetnetError(f"the {self.meta['task']} model links entities found by a token model: run "
                              "`aetnet predict --entities TOKEN_MODEL --links RELATION_MODEL FILES`")
        if question and self.kind != "qa":
            logger.warning("--question is ignored: the %s model is a %s model", self.meta["task"], self.kind)
        doc = Document(id="page", words=words, boxes=boxes, page_size=image.size)
        if self.box_level == "segment" and words and segments is not None:  # the page's own segments
            doc.segment_ids, doc.segment_boxes = list(segments), union_boxes(doc.boxes, list(segments))
        elif self.box_level == "segment" and words:
            doc.segment_ids, doc.segment_boxes = line_segments(doc.boxes, lines)
        tokenizer = self.processor.tokenizer
        if self.kind == "qa":
            # The same windows as training (word boxes, question tokens boxed [0,0,0,0]).
            windows = encode_qa_examples([QAExample("q", question, doc)], tokenizer, self.max_length, self.stride)
        else:
            windows = encode_token_documents([doc], tokenizer, None, self.max_length, self.stride,
                                             self.box_level)
            if self.kind == "sequence":
                # As in training, a page's class is read from its first window (the first
                # max_length tokens); the windows after it would only repeat the page's layout.
                windows = windows[:1]
        return doc, windows

    def decode(self, image: Image.Image, doc: Document, windows: list[Window], outputs: list[Any],
               question: str | None = None) -> dict[str, Any]:
        """The page's record from its windows' outputs (see :meth:`predict_words`)."""
        words_out = [{"text": w, "box": [round(v) for v in b]} for w, b in zip(doc.words, doc.boxes)]
        result: dict[str, Any] = {"size": list(image.size), "task": self.meta["task"], "kind": self.kind,
                                  "windows": len(windows), "words": words_out}
        if self.kind == "token":
            self._decode_tokens(result, windows, outputs)
        elif self.kind == "sequence":
            probs = softmax(np.stack(outputs).astype(np.float64)).mean(axis=0)
            names = self.labels or [str(i) for i in range(len(probs))]
            result.update(label=names[int(probs.argmax())], score=float(probs.max()),
                          probabilities={name: float(p) for name, p in zip(names, probs)})
        else:
            self._decode_answer(result, question, windows, outputs)
        return result

    def _decode_tokens(self, result: dict, windows: list[Window], outputs: list[np.ndarray]) -> None:
        words = result["words"]
        merged = merge_token_predictions(windows, outputs, [len(words)])[0]
        labels, scores = word_predictions(merged, self.labels)
        for word, label, score in zip(words, labels, scores):
            word.update(label=label, score=round(score, 6))
        result["entities"] = group_entities([w["text"] for w in words], [w["box"] for w in words], labels)

    def _decode_answer(self, result: dict, question: str, windows: list[Window], outputs: list) -> None:
        (span,) = decode_spans(windows, outputs, 1, MAX_ANSWER_TOKENS)
        result["question"] = question
        if span is None:
            result["answer"] = None
            return
        first, last, score = span.start_word, span.end_word, span.score
        picked = result["words"][first:last + 1]
        result["answer"] = {"text": " ".join(w["text"] for w in picked), "score": score,
                            "words": list(range(first, last + 1)), "boxes": [w["box"] for w in picked],
                            "box": union_box([w["box"] for w in picked])}

    def pixels(self, image: Image.Image) -> torch.Tensor | None:
        """The page image as the model sees it: (3, H, W) float pixel values; ``None`` for a base without an
        image stream (LiLT)."""
        if self.processor.image_processor is None:
            return None
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _forward(self, windows: list[Window], image: Image.Image) -> list[Any]:
        """Logits per window (trimmed to its length); QA: ``(start, end)`` per window."""
        # All windows of a page share its image: process it once.
        pixels = self.pixels(image)
        return self.forward_windows([(w, pixels) for w in windows])

    def forward_windows(self, items: Sequence[tuple[Window, torch.Tensor]],
                        batch_size: int | None = None) -> list[Any]:
        """Outputs of windows (of any pages) with their page pixels, ``batch_size`` per backend call."""
        collate = Collator(self.processor.tokenizer.pad_token_id)
        outputs: list[Any] = []
        size = batch_size or self.batch_size
        for i in range(0, len(items), size):
            chunk = items[i:i + size]
            batch = collate([{"input_ids": torch.tensor(w.input_ids), "bbox": torch.tensor(w.bbox),
                              "attention_mask": torch.ones(len(w.input_ids), dtype=torch.long),
                              **({} if pixels is None else {"pixel_values": pixels}),
                              **w.extra_tensors()}  # relation entities
                             for w, pixels in chunk])
            # a relation window has one output row per entity (see aetnet.predict.pairs), the others one per token
            lengths = [len(w.entity_index) if self.kind == "relation" else len(w.input_ids) for w, _ in chunk]
            outputs.extend(window_outputs(self.kind, self.backend(batch), lengths))
        return outputs


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype or torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise AetnetError(f"dtype '{dtype}' is not supported; use float32 or bfloat16")
    return names[dtype]


def _config_labels(model: torch.nn.Module) -> list[str] | None:
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    return [id2label[i] for i in sorted(id2label)] if id2label else None


def predict_page_file(predictor: Predictor, path: Path,
                      question: str | None = None) -> tuple[list[dict[str, Any]], list[PdfPage]]:
    """Every page of an aetnet pages file, predicted (:func:`iter_page_file`), as lists of records and pages."""
    records, images = [], []
    for record, image in iter_page_file(predictor, path, question):
        records.append(record)
        images.append(PdfPage(image, None))
    return records, images


def iter_page_file(predictor: Predictor, path: Path,
                   question: str | None = None) -> Iterator[tuple[dict[str, Any], Image.Image]]:
    """Predict the pages of an aetnet pages file (:mod:`aetnet.data.documents.pages`) one at a time, with their own
    words, boxes and segments (pages without words go through the predictor's OCR); targets, if any, are not
    read. Yields each page's record and image as soon as it is predicted."""
    from aetnet.data.documents.page_checks import image_error_at
    from aetnet.data.documents.pages import iter_page_lines, parse_page
    from aetnet.data.ocr.images import open_image

    for number, (where, line) in enumerate(iter_page_lines(path), start=1):
        if isinstance(line, DataError):
            raise line
        doc = parse_page(line, where, path.parent, None, ocr=lambda p: predictor.ocr(open_image(p)))
        try:
            image = doc.load_image()
        except DataError as exc:  # name the line that refers to the image, too
            raise image_error_at(exc, doc.image_path, where) if doc.image_path else exc from None
        result = predictor.predict_words(image, doc.words, doc.boxes, question, segments=doc.segment_ids)
        yield {"file": str(path), "page": number, "id": doc.id,
               "image": str(doc.image_path) if doc.image_path else None, **result}, image


@contextmanager
def json_list_file(path: Path | None) -> Iterator[Callable[[Any], None]]:
    """A function writing the items of a JSON list to ``path`` one at a time, the bytes of
    ``json.dumps(items, indent=1, ensure_ascii=False)``; written to ``path.partial``, renamed to ``path`` when the
    block ends without an error. With ``path`` None, the function does nothing."""
    if path is None:
        yield lambda item: None
        return
    count = 0
    with replaced_when_done(path) as fh:
        def write(item: Any) -> None:
            nonlocal count
            text = json.dumps(item, indent=1, ensure_ascii=False).replace("\n", "\n ")  # one level deeper
            fh.write(("[\n " if count == 0 else ",\n ") + text)
            fh.flush()  # a page's record is on disk once it is predicted (a long run can be followed)
            count += 1

        yield write
        fh.write("\n]" if count else "[]")


def predict_paths(predictor: Predictor, inputs: Sequence[str | Path], output: str | Path | None = None,
                  question: str | None = None, visualize: bool = False,
                  ocr_workers: int | None = 1, keep: Callable[[dict], Any] | None = None) -> dict[str, list]:
    """Predict every page of every file (folders expanded), with a progress bar over files.

    With ``output``, writes ``OUT/<stem>.json`` (a list, one record per page) per input and, with
    ``visualize``, ``OUT/<stem>-page<N>.png`` per page. Pages are read, predicted and written one
    at a time (a long PDF or a large pages file is never held in memory: each record is written to
    ``<stem>.json`` as soon as it is predicted); with ``ocr_workers`` other than 1 (``0``/``None``:
    every core) the pages that need OCR are first recognised in a process pool
    (:func:`aetnet.predict.ocr.prefetch_ocr`).

    Args:
        keep: what to keep of each page record in the result (``aetnet predict --output`` keeps a one-line
            summary); the whole record when None.

    Returns:
        ``{file path: [page records, or what keep made of them]}``.
    """
    from tqdm.auto import tqdm

    if visualize and output is None:
        raise AetnetError("--visualize writes PNG files: pass --output DIR as well")
    files = collect_files(inputs)
    out_dir = Path(output) if output is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if ocr_workers != 1:
        from aetnet.data.ocr.tesseract import OcrSettings
        from aetnet.predict.ocr import prefetch_ocr

        owner = predictor.word_reader  # key-value pairs: the token model reads the words
        prefetch_ocr(files, owner.ocr_mode, OcrSettings(lang=owner.ocr_lang, psm=owner.ocr_psm), owner.ocr_cache,
                     ocr_workers, PDF_DPI)
    results: dict[str, list] = {}
    used: set[str] = set()
    for path in tqdm(files, desc="predict", unit="file"):
        # Two inputs with one stem (a.png, a.pdf) must not overwrite each other's output.
        stem = path.stem if path.stem not in used else f"{path.stem}-{path.suffix.lstrip('.').lower()}"
        used.add(stem)
        kept = results[str(path)] = []
        with json_list_file(out_dir / f"{stem}.json" if out_dir is not None else None) as write:
            # One page at a time: read (rendered, recognised), predicted, written, drawn, then let go.
            for record, image in _predicted_pages(predictor, path, question):
                write(record)
                if visualize:
                    draw_page(image, record).save(out_dir / f"{stem}-page{record['page']}.png")
                kept.append(record if keep is None else keep(record))
    return results


def _predicted_pages(predictor: Predictor, path: Path,
                     question: str | None) -> Iterator[tuple[dict[str, Any], Image.Image]]:
    """(record, image) of each page of one input file, predicted one at a time."""
    if path.suffix.lower() == ".jsonl":  # aetnet pages: their words and boxes, no OCR
        yield from iter_page_file(predictor, path, question)
        return
    for number, page in enumerate(predictor.iter_load(path), start=1):
        yield {**predictor.predict_pages(path, [page], question)[0], "page": number}, page.image
