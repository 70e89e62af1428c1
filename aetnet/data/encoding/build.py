"""Building one window cache entry from a stream of examples: a bounded chunk at a time, resumable.

:func:`build_entry` reads the examples once, front to back, in chunks of
:data:`aetnet.data.encoding.store.CHUNK`; each chunk is encoded (in this process, or in
``data.encode_workers`` spawned processes with at most :data:`IN_FLIGHT` chunks per worker waiting, handed over
as compressed pickles), written to its own Arrow file in the entry's partial folder (``.<key>.partial/``; by
the worker that encoded it) and dropped, so the building process holds at most :func:`chunk_bound` examples
whatever the size of the split, and no windows of workers. A chunk's file is
written under a temporary name and renamed, then its small ``.json`` record: a killed build started again
(same fingerprint, so the same examples) reads its way past the finished chunks without encoding them
again. When every chunk is done, the chunk files are joined, batch by batch, into the entry's
``windows.arrow`` and the entry is renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sized
from itertools import islice
from pathlib import Path
from typing import Any

from aetnet.data.encoding import store as ws

logger = logging.getLogger(__name__)  # the entry's own lines go to the window store's logger

#: Chunks handed to each encoding worker ahead of the one being written (the others wait their turn).
IN_FLIGHT = 2
CHUNKING_FILE = "chunking.json"


def chunk_bound(workers: int) -> int:
    """The most examples the building process holds at once with ``workers`` encoding processes: the chunk
    being read, plus the chunks handed to the workers and not yet encoded."""
    return ws.CHUNK * (1 if workers <= 1 else IN_FLIGHT * workers + 1)


def chunks(examples: Iterable[Any]) -> Iterator[list[Any]]:
    """``examples`` as consecutive lists of :data:`~aetnet.data.encoding.store.CHUNK` (the last one shorter);
    a list is released before the next one is read."""
    stream = iter(examples)
    while True:
        chunk = list(islice(stream, ws.CHUNK))
        if not chunk:
            return
        yield chunk
        del chunk  # not alive while the next chunk is read


def _partial_folder(folder: Path) -> tuple[Path, set[int]]:
    """The entry's partial folder and the chunks already finished in it (none if the chunk size changed)."""
    partial = folder.parent / f".{folder.name}.partial"
    chunking = {"chunk": ws.CHUNK}
    record = partial / CHUNKING_FILE
    if partial.is_dir() and (not record.is_file() or json.loads(record.read_text()) != chunking):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    _write_atomic(record, json.dumps(chunking).encode())
    done = {int(p.stem) for p in partial.glob("*.json") if p.name != CHUNKING_FILE}
    return partial, done


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _write_table(partial: Path, index: int, table) -> None:
    """Write chunk ``index``'s Arrow file (under a temporary name, then renamed)."""
    import pyarrow as pa

    fd, tmp = tempfile.mkstemp(prefix=f".{index:06d}-", dir=partial)
    os.close(fd)
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, partial / f"{index:06d}.arrow")


def _save_chunk(partial: Path, index: int, result: tuple[Any, int, str, int]) -> dict[str, Any]:
    """Write one encoded chunk (its Arrow file, unless a worker wrote it, then its record: the chunk is finished
    once its record exists) and return the record."""
    table, n_windows, kind, n_examples = result
    if table is not None:
        _write_table(partial, index, table)
    record = {"windows": n_windows, "kind": kind, "examples": n_examples}
    _write_atomic(partial / f"{index:06d}.json", json.dumps(record).encode())
    return record


def _encode_in_worker(job: tuple[int, int, bytes, Path]) -> tuple[None, int, str, int]:
    """One chunk in an encoding worker: ``(index, offset of its first example, its examples pickled then
    compressed with zlib, the partial folder)``; the worker writes the chunk's Arrow file itself, so that the
    preparing process never holds the windows, and returns the figures of its record."""
    index, offset, payload, partial = job
    setup = ws._WORKER  # what the pool's initializer (store._init_worker) gave this process
    table, n_windows, kind, n_examples = ws._encode(setup["encode"], setup["tokenizer"], setup["label2id"],
                                                    setup["cfg"], offset, pickle.loads(zlib.decompress(payload)))
    if table is not None:
        _write_table(partial, index, table)
    return None, n_windows, kind, n_examples


def _chunk_records(encode, examples, tokenizer, label2id, cfg, partial: Path, done: set[int],
                   workers: int) -> Iterator[dict[str, Any]]:
    """Per chunk, in order: its record (``windows``, ``kind``, ``examples``), encoding only unfinished chunks."""
    import multiprocessing

    def finished(index: int) -> dict[str, Any]:
        return json.loads((partial / f"{index:06d}.json").read_text())

    # (no enumerate(): its reused result tuple would keep the previous chunk alive while the next is read)
    index = -1
    if workers <= 1:
        for chunk in chunks(examples):
            index += 1
            if index in done:
                record = finished(index)
            else:
                record = _save_chunk(partial, index, ws._encode(encode, tokenizer, label2id, cfg, index * ws.CHUNK,
                                                                chunk))
            del chunk
            yield record
        return
    logger.info("encoding with %d processes", workers)
    # spawn: the workers never inherit the trainer's threads, CUDA state or open files.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, ws._init_worker, (encode, tokenizer, label2id, cfg)) as pool:
        pending: deque = deque()
        for chunk in chunks(examples):
            index += 1
            # handed over as one compressed pickle, made now: a chunk waiting for a worker then holds a tenth
            # to a half of the memory of its documents as objects (pixel boxes are float64 arrays of mostly
            # whole numbers), which sets the preparing process's peak with workers (benchmarks/README.md)
            job = None if index in done else pool.apply_async(_encode_in_worker, (
                (index, index * ws.CHUNK, zlib.compress(pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL), 1), partial),))
            pending.append((index, job))
            del chunk
            while len(pending) > IN_FLIGHT * workers:
                index_, job_ = pending.popleft()
                yield finished(index_) if job_ is None else _save_chunk(partial, index_, job_.get())
        while pending:
            index_, job_ = pending.popleft()
            yield finished(index_) if job_ is None else _save_chunk(partial, index_, job_.get())


def build_entry(encode, examples: Iterable[Any], tokenizer, label2id, cfg, folder: Path, described: dict,
                desc: str) -> Path:
    """Encode ``examples`` (a sequence, or a stream read once) with ``encode`` (``(examples, tokenizer,
    label2id, cfg) -> windows``) into the new cache entry ``folder``; returns it.

    The caller holds the entry's file lock (one builder per fingerprint at a time).
    """
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial, done = _partial_folder(folder)
    if done:
        logger.info("%s: resuming the build of %s, %d chunk(s) already encoded", desc, folder.name, len(done))
    from aetnet.data.documents.stream import stream_documents

    total = examples.count if stream_documents(examples) else len(examples) if isinstance(examples, Sized) else None
    workers = ws.encode_workers(cfg, total)
    start, count, n_examples, kind, n_chunks = time.perf_counter(), 0, 0, "window", 0
    with tqdm(total=total, desc=f"encode {desc}", unit="doc", disable=total is not None and total <= ws.CHUNK) as bar:
        for record in _chunk_records(encode, examples, tokenizer, label2id, cfg, partial, done, workers):
            count += record["windows"]
            n_examples += record["examples"]
            kind = record["kind"] if record["windows"] else kind
            n_chunks += 1
            bar.update(record["examples"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        writer = ArrowWriter(path=str(tmp / ws.WINDOWS_FILE))
        for index in range(n_chunks):  # joined batch by batch from the mapped chunk files
            chunk_file = partial / f"{index:06d}.arrow"
            if chunk_file.is_file():
                writer.write_table(pa.ipc.open_stream(pa.memory_map(str(chunk_file))).read_all())
        if count == 0:
            writer.write_table(ws.windows_table([]))
        writer.finalize()
        meta = {**described, "windows": count, "documents": n_examples, "window_type": kind,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_seconds": round(time.perf_counter() - start, 3)}
        (tmp / ws.META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote the same entry first: it is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(partial, ignore_errors=True)
    ws.logger.info("%s: %s windows of %s examples encoded into %s", desc, f"{count:,}", f"{n_examples:,}", folder)
    return folder
