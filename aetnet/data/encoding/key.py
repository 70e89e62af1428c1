"""What identifies a set of encoded windows: the fingerprint of a window cache entry.

Two encodings give the same windows when they see the same examples' content (words, pixel boxes,
page sizes, labels, segments, links, questions and located answers, as read: so any change of the
data files, the OCR settings, the screening or the document selection changes the key), the same
tokenizer (its serialised vocabulary and special-token boxes, not where it was loaded from), the same
``data.*`` settings (all but :data:`NOT_ENCODING`), the same label ids, the same encoder (a
:class:`WindowEncoder`: its task name, the source of the encoding modules and of the encoder's own code,
a task's classes, its relation schema, and the transformers and tokenizers versions) and the same aetnet
version and cache format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Bumped whenever the on-disk layout or the fingerprint recipe changes.
CACHE_FORMAT = 1
#: ``data.*`` settings that select or describe documents but do not change how a given example is
#: encoded (the examples' content is hashed instead). Every other setting is part of the fingerprint.
NOT_ENCODING = ("path", "lang", "on_bad_document", "ocr_workers", "eval_fraction", "val_fraction", "select_on",
                "max_train_documents", "max_eval_documents", "labels", "window_cache", "encode_workers")


def _update_document(h, doc) -> None:
    """Feed one page's encoding-relevant content into the hash ``h``."""
    parts = [doc.id, "\x1f".join(doc.words), repr(doc.page_size), "\x1f".join(doc.labels or ["<none>"]),
             repr(doc.segment_ids), repr(sorted(doc.segment_boxes.items())), repr(doc.links), repr(doc.doc_label),
             repr(doc.meta.get("segment_texts"))]
    h.update("\x1e".join(parts).encode("utf-8", "surrogatepass"))
    h.update(np.asarray(doc.boxes, dtype=np.float64).tobytes())


class ExamplesDigest:
    """The hash of :func:`examples_digest`, fed one example at a time (so a stream can be hashed as it is
    read for another purpose). Nothing of an example is kept but the last page's hash (the questions of
    a page follow each other; a page met again is hashed again, to the same value)."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)
        self._last_page, self._last_hash = None, ""  # the page is kept, so its id() cannot be reused meanwhile
        self.count = 0

    def update(self, example: Any) -> None:
        self.count += 1
        doc = getattr(example, "document", None)
        if doc is None:
            self._h.update(b"\x1d")
            _update_document(self._h, example)
            return
        if doc is not self._last_page:
            page = hashlib.blake2b(digest_size=16)
            _update_document(page, doc)
            self._last_page, self._last_hash = doc, page.hexdigest()
        self._h.update("\x1d".join([self._last_hash, example.id, example.question,
                                    repr(example.answer_span)]).encode())

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(str(self.count).encode())
        return h.hexdigest()


def examples_digest(examples: Iterable[Any]) -> str:
    """A hash of the examples' content as read, in order (pages, or questions with their pages).

    ``examples`` is read once, front to back, without holding it; a
    :class:`~aetnet.data.documents.stream.DocumentStream` gives the digest it took while it was scanned (no pass).
    """
    from aetnet.data.documents.stream import DocumentStream

    if isinstance(examples, DocumentStream):
        return examples.digest
    digest = ExamplesDigest()
    for example in examples:
        digest.update(example)
    return digest.hexdigest()


def tokenizer_identity(tokenizer) -> dict[str, Any]:
    """What identifies a tokenizer's output: its class, a hash of its serialised vocabulary, merges and
    added tokens, and its settings (special-token boxes, ...), not where it was loaded from."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = backend.to_str()
    else:
        state = json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {k: v for k, v in sorted(getattr(tokenizer, "init_kwargs", {}).items())
                if k != "name_or_path" and not k.endswith("_file") and isinstance(v, (int, float, str, bool, list))}
    for name in ("cls_token_box", "sep_token_box", "pad_token_box", "pad_token_label", "only_label_first_subword"):
        settings[name] = getattr(tokenizer, name, None)
    vocabulary = hashlib.blake2b(state.encode(), digest_size=16).hexdigest()
    return {"class": type(tokenizer).__name__, "vocabulary": vocabulary,
            "settings": json.dumps(settings, sort_keys=True, default=str)}


#: Modules whose code shapes every window, whatever the encoder (the encoder's own code is added), and
#: the store's own row format.
ENCODING_MODULES = ("aetnet.data.encoding.windows", "aetnet.data.encoding.qa", "aetnet.data.documents.relations",
                    "aetnet.data.documents.relation_protocols", "aetnet.data.documents.boxes",
                    "aetnet.data.encoding.store", "aetnet.data.encoding.build")


@dataclass(frozen=True)
class WindowEncoder:
    """An encode function and what the window cache's fingerprint must know of it
    (:func:`~aetnet.data.encoding.store.encode_cached` takes this, never a task).

    A task gives its own (:meth:`aetnet.tasks.base.Task.window_encoder`); any other encoder is
    ``WindowEncoder(my_encode, "my-task")``.

    Attributes:
        encode: ``(examples, tokenizer, label2id, cfg) -> windows``; picklable when ``data.encode_workers``
            builds in several processes (a task's bound ``encode`` is).
        name: the task's name: in the fingerprint and in the entry's ``meta.json`` (``aetnet cache ls``).
        origin: the class (every class of its MRO) or function whose code shapes the windows, besides
            :data:`ENCODING_MODULES`: its qualified name and the source of its modules are in the fingerprint.
            ``None``: ``encode`` itself.
        schema: a setting of the encoder that is not in its code nor in ``cfg.data`` (a relation task's
            :class:`~aetnet.data.documents.relation_protocols.RelationSchema`); its ``repr`` is in the fingerprint.
    """

    encode: Callable[..., Sequence[Any]]
    name: str
    origin: type | Callable[..., Any] | None = None
    schema: Any = None

    @property
    def code_origin(self) -> type | Callable[..., Any]:
        return self.encode if self.origin is None else self.origin

    def qualified_name(self) -> str:
        """``module.QualName`` of what encodes."""
        origin = self.code_origin
        return f"{origin.__module__}.{origin.__qualname__}"


def code_identity(origin: type | Callable[..., Any]) -> dict[str, str]:
    """A hash of the source of the encoding modules and of every module defining ``origin`` (each class of a
    class's MRO, or a function's module), and the tokenizer libraries' versions: a changed encoder (a fix, a
    local edit) never reads stale windows."""
    import importlib
    import sys

    import tokenizers
    import transformers

    files = {Path(importlib.import_module(name).__file__) for name in ENCODING_MODULES}
    for item in (origin.__mro__ if isinstance(origin, type) else (origin,)):
        module = sys.modules.get(item.__module__)
        if module is not None and getattr(module, "__file__", None) and item.__module__ != "builtins":
            files.add(Path(module.__file__))
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return {"source": h.hexdigest(), "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def window_fingerprint(encoder: WindowEncoder, examples: Iterable[Any], tokenizer, label2id: dict[str, int] | None,
                       cfg) -> tuple[str, dict[str, Any]]:
    """``(key, description)`` of the windows ``encoder.encode(examples, tokenizer, label2id, cfg)`` gives.

    Args:
        encoder: the encode function, its task name, the code behind it and its schema.
        examples: the examples, in order (a sequence, or a stream read once).
        tokenizer: the LayoutLMv3 tokenizer.
        label2id: label ids (``None``: unlabelled).
        cfg: the run configuration (``cfg.data`` minus :data:`NOT_ENCODING`).
    """
    from aetnet.version import __version__

    settings = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in NOT_ENCODING}
    described = {
        "format": CACHE_FORMAT,
        "aetnet_version": __version__,
        "task": encoder.name,
        "task_class": encoder.qualified_name(),
        "schema": repr(encoder.schema),
        "code": code_identity(encoder.code_origin),
        "settings": settings,
        "label2id": label2id,
        "tokenizer": tokenizer_identity(tokenizer),
        "examples": examples_digest(examples),
    }
    key = hashlib.blake2b(json.dumps(described, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    return key, described
