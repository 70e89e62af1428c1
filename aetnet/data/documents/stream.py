"""A split read on demand: documents stream from the reader (and the OCR cache) and are never held whole.

A :class:`DocumentStream` is what a task's ``load`` returns for a split too large to hold (the training
split of RVL-CDIP, CORD's JSON folders, FUNSD's release folder and pages files): each iteration reads the
documents again, in the same order. Readers of files list one :class:`DocumentRef` per document first (its
id and how to read it again), so that splits are carved and labels checked as with lists
(:func:`stream_training`). Its first pass,
:meth:`DocumentStream.scan`, runs inside the reader's ``load`` so that bad documents reach the run's
``--on-bad-document`` policy in page order, at the same moment as with a list; it screens each document as
the runner does (:func:`aetnet.data.documents.screen.check_document`), counts them, keeps one
:class:`~aetnet.data.documents.document.PageImage` per document (where its pixels are: what training needs of it)
and the digest the window cache fingerprint uses (:class:`aetnet.data.encoding.key.ExamplesDigest`). Later
passes (the window cache build) read the same documents again; their problems were recorded already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aetnet.data.documents.document import Document, PageImage
from aetnet.data.documents.screen import BadDocuments, check_document
from aetnet.errors import AetnetError


class DocumentStream:
    """One split's documents, read again at each iteration.

    Args:
        read: ``read(policy)`` -> the documents in order; the reader hands each bad document to
            ``policy`` (``None``: the error propagates) and leaves it out.
        split: the split's name, for ``skipped.jsonl``.
        policy: the run's :class:`~aetnet.data.documents.screen.BadDocuments` (``None``: errors propagate).
        box_level: ``data.box_level``, for screening.
        need_words: whether a document without words is bad (token tasks).
        document: ``document(item)`` -> the page of an item the reader yields (the item itself; a question's
            page for QA, screened and referenced for each of its questions, as with lists).

    Attributes (after :meth:`scan`):
        count: the documents that passed.
        digest: their content hash (see :func:`aetnet.data.encoding.key.examples_digest`).
        pages: one :class:`PageImage` per document, in order.
    """

    def __init__(self, read: Callable[[BadDocuments | None], Iterator[Document]], split: str,
                 policy: BadDocuments | None = None, box_level: str = "segment", need_words: bool = False,
                 document: Callable[[Any], Document] = lambda item: item):
        self._read, self.split, self.policy, self.document = read, split, policy, document
        self.box_level, self.need_words = box_level, need_words
        self.count: int | None = None
        self.digest = ""
        self.pages: list[PageImage] = []

    def _documents(self, policy: BadDocuments | None) -> Iterator[Any]:
        for item in self._read(policy):
            doc = self.document(item)
            if policy is None:
                check_document(doc, self.box_level, self.need_words)
            elif not policy.run(lambda d=doc: check_document(d, self.box_level, self.need_words) or True,
                                self.split, doc.id, doc.source):
                continue
            yield item

    def scan(self) -> DocumentStream:
        """The first pass: problems to the policy (in page order), count, digest and page references."""
        from aetnet.data.encoding.key import ExamplesDigest

        digest, pages, last, sizes = ExamplesDigest(), [], (None, None), {}
        for item in self._documents(self.policy):
            digest.update(item)
            doc = self.document(item)
            if doc is not last[0]:  # a page's questions share its reference
                page = doc.page_image()
                page.page_size = sizes.setdefault(page.page_size, page.page_size)  # one tuple per page size
                last = (doc, page)
            pages.append(last[1])
        self.count, self.digest, self.pages = digest.count, digest.hexdigest(), pages
        return self

    def __iter__(self) -> Iterator[Document]:
        if self.count is None:
            raise AetnetError(f"the {self.split} documents are read before they were scanned (call scan() first)")
        quiet = BadDocuments("skip")  # the scan recorded every problem once already
        n = 0
        for doc in self._documents(quiet):
            n += 1
            yield doc
        if n != self.count:
            raise AetnetError(f"the {self.split} split gave {n} documents on a second reading against {self.count} "
                              "on the first: its files changed while the run prepared them; start the run again")

    def __len__(self) -> int:
        if self.count is None:
            raise AetnetError(f"the {self.split} documents are counted by scan(), which has not run")
        return self.count

    def __bool__(self) -> bool:
        return bool(self.count)

    def __repr__(self) -> str:
        return f"DocumentStream({self.split!r}, count={self.count})"


def stream_documents(examples: Any) -> bool:
    """Whether ``examples`` is a :class:`DocumentStream` (read on demand) rather than a list."""
    return isinstance(examples, DocumentStream)


class DocumentRef:
    """Where one listed document is, and how to read it again: what a streamed split keeps per document
    (its id and a reader, never its words, boxes or labels).

    Args:
        id: the document's id (what splits are carved by).
        read: ``read()`` -> the :class:`Document`, read again from its file at each call.
    """

    __slots__ = ("id", "read")

    def __init__(self, id: str, read: Callable[[], Document]):  # noqa: A002 (the documents' own name)
        self.id, self.read = id, read

    def __repr__(self) -> str:
        return f"DocumentRef({self.id!r})"


def kept_references(refs: list[DocumentRef], keep: Callable[[Document], bool]) -> list[DocumentRef]:
    """The references whose document ``keep`` accepts (each read once, dropped at once); ``keep`` hands
    a rejected document to the run's policy (the task's label check)."""
    return [ref for ref in refs if keep(ref.read())]


def stream_references(refs: list[DocumentRef], split: str, policy: BadDocuments | None, box_level: str,
                      need_words: bool, finish: Callable[[Document], Any] | None = None) -> DocumentStream:
    """A scanned :class:`DocumentStream` over ``refs``' documents, read one at a time, in order;
    ``finish(doc)`` completes each document as its reader's list path does (counts kept in ``meta``)."""

    def read(_policy: BadDocuments | None) -> Iterator[Document]:
        for ref in refs:  # (listed as good by the reader: reading them again raises only if they changed)
            doc = ref.read()
            if finish is not None:
                finish(doc)
            yield doc

    return DocumentStream(read, split, policy, box_level, need_words).scan()


def stream_training(task, splits: dict[str, list], max_train: int | None, box_level: str,
                    bad_documents: BadDocuments | None, finish: Callable[[Document], Any] | None = None
                    ) -> dict[str, list]:
    """A reader's listed splits (``{split: [DocumentRef]}``, after carving) as the runner takes them: each split's
    documents label-checked by ``task.keep_known_labels`` in split order, as lists are; the evaluation splits
    read into lists (``finish`` applied); ``train`` (the first ``max_train`` kept) a scanned
    :class:`DocumentStream`, never held whole. ``bad_documents``: the run's policy (``None``: errors raise)."""
    out = {}
    for split, refs in splits.items():
        if split == "train":
            out[split] = kept_references(refs, lambda doc: bool(task.keep_known_labels([doc], "train", bad_documents)))
        else:
            out[split] = docs = task.keep_known_labels([ref.read() for ref in refs], split, bad_documents)
            for doc in docs if finish is not None else ():
                finish(doc)
    if "train" in out:
        train = out["train"] if max_train is None else out["train"][:max_train]
        out["train"] = stream_references(train, "train", bad_documents, box_level, task.kind == "token", finish)
    for split in out:  # the reader's own Splits (its eval_split) keeps its type
        splits[split] = out[split]
    return splits
