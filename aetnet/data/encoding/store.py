"""Encoded windows on disk, memory-mapped, written once per fingerprint and shared by every run.

:func:`encode_cached` turns examples into windows with an encode function (a
:class:`~aetnet.data.encoding.key.WindowEncoder`; a task gives its own), a chunk of examples at a
time, and writes them to an Arrow file (Hugging Face ``datasets``) with compact dtypes: ids int32,
boxes and word boxes int16 (flattened, 4 per token), token labels int16, word ids int32
(-1 for none). The file lives in ``$AETNET_CACHE/windows/<fingerprint>/`` and is reused by later
runs, by every strategy and seed of ``aetnet compare`` and by every process of a distributed run
(the main process builds it under the runner's local-main-first barrier; the others open it).

The fingerprint (:mod:`aetnet.data.encoding.key`) covers everything the windows depend on: the
examples' content as read, the tokenizer, the encoding settings, the label ids, the encoder (its task name,
code and schema), the versions and the cache format.
:class:`WindowStore` is a read-only sequence of :class:`~aetnet.data.encoding.windows.Window`
rows decoded on access: nothing per token stays in Python memory for the whole dataset.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aetnet.data.documents.relations import RelationWindow
from aetnet.data.encoding.key import WindowEncoder, window_fingerprint
from aetnet.data.encoding.windows import Window
from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)

WINDOWS_FILE = "windows.arrow"
META_FILE = "meta.json"
LOCKS = ".locks"
#: Examples encoded (and written) per chunk.
CHUNK = 256


def window_cache_dir() -> Path:
    """``$AETNET_CACHE/windows``, else ``~/.cache/aetnet/windows``."""
    root = os.environ.get("AETNET_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "aetnet") / "windows"


# ------------------------------------------------------------------------------------------ columns
def _flat(rows: list, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list of per-window number lists (nested lists are flattened row-major)."""
    arrays = [np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return offsets, _narrow(values, dtype)


def _narrow(values: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise AetnetError(f"window values {values.min()}..{values.max()} do not fit {np.dtype(dtype).name} in the "
                          "window cache; boxes must be 0-1000 and label ids below 32768 (set data.window_cache=false "
                          "to train without the cache)")
    return values.astype(dtype)


def _list_array(rows: list, dtype):
    import pyarrow as pa

    offsets, values = _flat(rows, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values))


def _nullable_list(rows: list, dtype):
    """A list column whose ``None`` rows stay null."""
    import pyarrow as pa

    array = _list_array([r if r is not None else [] for r in rows], dtype)
    mask = pa.array([r is None for r in rows], type=pa.bool_())
    offsets = array.offsets
    return pa.ListArray.from_arrays(offsets, array.values, mask=mask)


def windows_table(windows: Sequence[Window], offset: int = 0):
    """One Arrow table of ``windows`` with compact dtypes (``offset`` added to ``doc_index``)."""
    import pyarrow as pa

    token_labels = [w.labels if isinstance(w.labels, list) else None for w in windows]
    scalar = [w.labels if isinstance(w.labels, int) else None for w in windows]
    columns = {
        "doc_index": pa.array(np.fromiter((w.doc_index + offset for w in windows), np.int64, len(windows))
                              .astype(np.int32)),
        "input_ids": _list_array([w.input_ids for w in windows], np.int32),
        "bbox": _list_array([w.bbox for w in windows], np.int16),
        "word_bbox": _nullable_list([w.word_bbox for w in windows], np.int16),
        "word_ids": _list_array([[-1 if x is None else x for x in w.word_ids] for w in windows], np.int32),
        "token_labels": _nullable_list(token_labels, np.int16),
        "label": pa.array(scalar, pa.int32()),
        "start_positions": pa.array([w.start_positions for w in windows], pa.int32()),
        "end_positions": pa.array([w.end_positions for w in windows], pa.int32()),
    }
    if windows and isinstance(windows[0], RelationWindow):
        columns["entity_index"] = _list_array([w.entity_index for w in windows], np.int32)
        columns["entity_positions"] = _list_array([w.entity_positions for w in windows], np.int32)
        columns["entity_labels"] = _list_array([w.entity_labels for w in windows], np.int16)
        columns["relation_labels"] = _nullable_list([w.relation_labels for w in windows], np.int16)
        columns["entity_chunks"] = _list_array([w.entity_chunks for w in windows], np.int32)
        columns["entity_primary"] = _list_array([w.entity_primary for w in windows], np.int8)
        columns["page_relation_labels"] = _nullable_list([w.page_relation_labels for w in windows], np.int16)
    return pa.table(columns)


def _boxes(flat: list[int] | None) -> list[list[int]] | None:
    return None if flat is None else [flat[i: i + 4] for i in range(0, len(flat), 4)]


def row_to_window(row: dict[str, Any]) -> Window:
    """The :class:`Window` (or :class:`RelationWindow`) of one stored row."""
    labels = row["token_labels"] if row["token_labels"] is not None else row["label"]
    fields = dict(doc_index=row["doc_index"], input_ids=row["input_ids"], bbox=_boxes(row["bbox"]),
                  word_ids=[None if x < 0 else x for x in row["word_ids"]], labels=labels,
                  start_positions=row["start_positions"], end_positions=row["end_positions"],
                  word_bbox=_boxes(row["word_bbox"]))
    if "entity_index" not in row:
        return Window(**fields)
    n = len(row["entity_positions"])
    rel, page_rel = row["relation_labels"], row["page_relation_labels"]
    width = len(page_rel) // n if page_rel is not None and n else 0
    return RelationWindow(**fields, entity_index=row["entity_index"], entity_positions=row["entity_positions"],
                          entity_labels=row["entity_labels"], entity_chunks=row["entity_chunks"],
                          entity_primary=row["entity_primary"],
                          page_relation_labels=None if page_rel is None else
                          [page_rel[i * width: (i + 1) * width] for i in range(n)],
                          relation_labels=None if rel is None else [rel[i * n: (i + 1) * n] for i in range(n)])


# -------------------------------------------------------------------------------------------- store
def _batch_views(batch) -> dict[str, tuple[np.ndarray | None, np.ndarray, np.ndarray | None]]:
    """Per column of one record batch: (offsets or None for scalars, values, null mask or None), numpy
    views of the mapped buffers (only null masks and scalar columns with nulls are copied, 1-4 B a row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    views = {}
    for name, column in zip(batch.schema.names, batch.columns):
        null = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
        if pa.types.is_list(column.type):
            views[name] = (column.offsets.to_numpy(), column.values.to_numpy(), null)
        else:
            filled = pc.fill_null(column, 0) if column.null_count else column
            views[name] = (None, filled.to_numpy(), null)
    return views


class WindowStore(Sequence):
    """A read-only, memory-mapped sequence of windows (one Arrow file written by :func:`encode_cached`).

    Indexing decodes one row into a :class:`Window` through numpy views of the mapped record batches
    (tens of microseconds; nothing is copied but the row). Pickling keeps only the path, so DataLoader
    workers and other processes map the same file.

    Args:
        folder: the cache entry (``windows.arrow`` and ``meta.json``).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META_FILE).read_text())
        self._table = None
        self._batches: list | None = None
        self._starts: np.ndarray | None = None
        self._views: list[dict | None] = []

    @property
    def table(self):
        """The memory-mapped Arrow table (opened on first use in each process)."""
        if self._table is None:  # the Arrow stream datasets' ArrowWriter wrote, mapped (zero-copy), as
            import pyarrow as pa  # datasets.Dataset.from_file maps it, without importing datasets in workers

            self._table = pa.ipc.open_stream(pa.memory_map(str(self.folder / WINDOWS_FILE))).read_all()
        return self._table

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "meta": self.meta, "_table": None, "_batches": None, "_starts": None,
                "_views": []}

    def __len__(self) -> int:
        return int(self.meta["windows"])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range ({n} windows)")
        return row_to_window(self._row(i % n))

    def __iter__(self) -> Iterator[Window]:
        for i in range(len(self)):
            yield row_to_window(self._row(i))

    def _row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as plain Python values (lists for list columns, ``None`` for nulls)."""
        if self._batches is None:
            self._batches = [b for b in self.table.to_batches() if b.num_rows]
            self._starts = np.cumsum([0] + [b.num_rows for b in self._batches])
            self._views = [None] * len(self._batches)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        if self._views[k] is None:
            self._views[k] = _batch_views(self._batches[k])
        j = i - int(self._starts[k])
        row: dict[str, Any] = {}
        for name, (offsets, values, null) in self._views[k].items():
            if null is not None and null[j]:
                row[name] = None
            elif offsets is None:
                row[name] = int(values[j])
            else:
                row[name] = values[offsets[j]: offsets[j + 1]].tolist()
        return row

    def doc_indices(self) -> np.ndarray:
        """``doc_index`` of every window, (N,) int32."""
        return self.table.column("doc_index").to_numpy()

    def nbytes(self) -> int:
        """Size of the Arrow file on disk."""
        return (self.folder / WINDOWS_FILE).stat().st_size


def encode_cached(encoder: WindowEncoder, examples: Iterable[Any], tokenizer, label2id: dict[str, int] | None, cfg,
                  desc: str = "windows") -> WindowStore | list[Window]:
    """``encoder.encode(examples, tokenizer, label2id, cfg)`` through the on-disk window cache.

    ``encoder`` is the encode function with what the fingerprint must know of it (a task's is
    :meth:`aetnet.tasks.base.Task.window_encoder`).

    The cache entry of the fingerprint (:func:`window_fingerprint`) is opened when it exists, built
    otherwise (:func:`aetnet.data.encoding.build.build_entry`: a chunk of :data:`CHUNK` examples at a time,
    in ``data.encode_workers`` processes when there are many, with a progress bar; under a file lock, so
    concurrent processes build it once; each finished chunk is kept, so a killed build started again does
    not encode it twice; the entry is renamed into place when complete, so it is never half written).
    With ``data.window_cache=false`` the windows are encoded in memory as before.

    ``examples`` is a sequence, or an iterable that yields the same examples each time it is iterated (a
    stream of documents read from disk): it is read twice (the fingerprint, then the chunks of a build),
    and never held whole, so preparing a split holds at most
    :func:`~aetnet.data.encoding.build.chunk_bound` examples at once.

    Returns:
        A :class:`WindowStore` (or, with the cache off, the list of windows).
    """
    if not isinstance(encoder, WindowEncoder):
        raise TypeError(f"encode_cached takes a WindowEncoder (a task's is task.window_encoder()), not "
                        f"{type(encoder).__name__}")
    if not getattr(cfg.data, "window_cache", True):
        return encoder.encode(examples if isinstance(examples, Sequence) else list(examples), tokenizer, label2id, cfg)
    from filelock import FileLock

    key, described = window_fingerprint(encoder, examples, tokenizer, label2id, cfg)
    folder = window_cache_dir() / key
    if not (folder / META_FILE).is_file():
        try:
            (folder.parent / LOCKS).mkdir(parents=True, exist_ok=True)
            # processes that need the same entry at once (compare --devices) wait for the one that builds it
            with FileLock(str(folder.parent / LOCKS / f"{key}.lock")):
                if not (folder / META_FILE).is_file():
                    from aetnet.data.encoding.build import build_entry

                    return WindowStore(build_entry(encoder.encode, examples, tokenizer, label2id, cfg, folder,
                                                   described, desc))
        except OSError as exc:
            raise AetnetError(f"cannot write the window cache in {folder.parent} ({exc.strerror or exc}); set "
                              "AETNET_CACHE to a writable folder with free space, or data.window_cache=false") from exc
    store = WindowStore(folder)
    logger.info("%s: %s windows from the cache %s", desc, f"{len(store):,}", folder)
    return store


# ------------------------------------------------------------------------------ parallel encoding
#: Builds of fewer chunks (10,240 examples) run in the calling process: spawning workers that import torch
#: and transformers costs several seconds, more than tokenising a few thousand pages.
PARALLEL_CHUNKS = 40
_WORKER: dict[str, Any] = {}


#: Examples encoded together inside a chunk: their windows (Python lists, about 130 KiB per 512-token window)
#: become Arrow columns before the next ones are encoded, so a chunk's build never holds more of them.
ENCODE_BATCH = 16


def _encode(encode, tokenizer, label2id, cfg, offset: int, chunk: Sequence[Any]) -> tuple[Any, int, str, int]:
    """(Arrow table or None, windows, window type, examples) of one chunk of examples, encoded by ``encode``
    :data:`ENCODE_BATCH` examples at a time (an example's windows depend on it alone)."""
    import pyarrow as pa

    tables, count, kind = [], 0, "window"
    for start in range(0, len(chunk), ENCODE_BATCH):
        windows = encode(chunk[start: start + ENCODE_BATCH], tokenizer, label2id, cfg)
        if windows:
            kind = "relation" if isinstance(windows[0], RelationWindow) else "window"
            tables.append(windows_table(windows, offset + start))
            count += len(windows)
        del windows  # not alive while the next batch is encoded
    return (pa.concat_tables(tables) if tables else None), count, kind, len(chunk)


def _init_worker(encode, tokenizer, label2id, cfg) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER.update(encode=encode, tokenizer=tokenizer, label2id=label2id, cfg=cfg)


def encode_workers(cfg, n_examples: int | None) -> int:
    """Processes for a build: ``data.encode_workers`` (0: every available core), 1 for small builds
    (``n_examples=None``: a stream of unknown length, as configured)."""
    from aetnet.data.ocr.pool import available_cores

    wanted = int(getattr(cfg.data, "encode_workers", 1))
    if wanted < 0:
        raise AetnetError(f"data.encode_workers={wanted} must be >= 0 (0: every available core)")
    if n_examples is None:
        return wanted or available_cores()
    chunks = -(-n_examples // CHUNK)
    if chunks < PARALLEL_CHUNKS:
        return 1
    return min(wanted or available_cores(), chunks)


def cache_entries(root: Path | None = None) -> list[dict[str, Any]]:
    """The cache's entries: ``{"key", "path", "task", "windows", "documents", "bytes", "created"}``."""
    root = root or window_cache_dir()
    out = []
    for meta_file in sorted(root.glob(f"*/{META_FILE}")):
        meta = json.loads(meta_file.read_text())
        folder = meta_file.parent
        out.append({"key": folder.name, "path": str(folder), "task": meta.get("task"),
                    "windows": meta.get("windows"), "documents": meta.get("documents"),
                    "bytes": sum(p.stat().st_size for p in folder.iterdir()), "created": meta.get("created")})
    return out
