"""``aetnet compare --devices``: the comparison's runs as a queue served by one process per device.

Before the queue starts, the dataset's pages are recognised once in the OCR pool (tasks whose words
need Tesseract), so the parallel runs read them from the cache instead of recognising the same pages
at the same time; the window cache needs nothing (concurrent builders of an entry wait on its lock).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aetnet.data.ocr.pool import available_cores
from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)


def fill_ocr_cache(task: str, cfg, demo: bool) -> None:
    """Recognise the dataset's pages once, in the OCR pool, before parallel runs read them from the cache
    (nothing to do for tasks whose words come with their annotations).

    Args:
        task: the task name.
        cfg: the resolved configuration of one of the runs (its data and OCR settings).
        demo: the runs use the embedded demo data.
    """
    from aetnet.data.ocr.pool import recognise_dataset
    from aetnet.inference.modelio import get_task

    try:
        recognise_dataset(get_task(task), cfg, demo, cfg.data.ocr_workers, desc="OCR before the runs")
    except AetnetError as exc:
        logger.debug("compare: no OCR to do first (%s)", exc)


def parse_devices(devices: str | Sequence[str]) -> list[str]:
    """``"0,1"`` or ``["0", "1"]`` -> ``["0", "1"]`` (at least one, no duplicates)."""
    items = devices.split(",") if isinstance(devices, str) else [str(d) for d in devices]
    out = [d.strip() for d in items if d.strip()]
    if not out or len(set(out)) != len(out):
        raise AetnetError(f"--devices {devices!r}: give distinct device ids, for example --devices 0,1,2,3")
    return out


def run_on_devices(jobs: list[dict[str, Any]], devices: list[str], log_dir: Path) -> None:
    """Run ``jobs`` (``finetune`` keyword arguments) as a queue served by one process per device.

    Raises:
        AetnetError: after every job has run, naming each failed run and its log file.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    failures: list[str] = []
    threads = max(1, available_cores() // len(devices))

    def worker(device: str) -> None:
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            log = log_dir / f"{job['strategy']}-{Path(job['output']).name}.log"
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": device}
            env.setdefault("OMP_NUM_THREADS", str(threads))
            logger.info("compare: device %s runs %s %s (log %s)", device, job["strategy"], Path(job["output"]).name,
                        log)
            with open(log, "w", encoding="utf-8") as fh:
                code = subprocess.call([sys.executable, "-c", _WORKER, json.dumps(job)], env=env, stdout=fh,
                                       stderr=subprocess.STDOUT)
            if code != 0:
                failures.append(f"{job['output']} (exit {code}; see {log})")

    pool = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise AetnetError(f"{len(failures)} comparison run(s) failed: {'; '.join(failures)}; rerun the same "
                          "command to resume them")


#: What a device worker process runs: one ``finetune`` call from JSON keyword arguments.
_WORKER = (
    "import json, logging, sys\n"
    "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
    "from aetnet.train.runner import finetune\n"
    "job = json.loads(sys.argv[1])\n"
    "finetune(job.pop('task'), **job)\n"
)
