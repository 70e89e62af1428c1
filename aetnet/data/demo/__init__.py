"""Synthetic demo datasets, generated offline in each benchmark's original release format.

The real FUNSD, CORD, RVL-CDIP and DocVQA releases may not be redistributed, yet ``aetnet finetune
<task> --demo`` must run end to end without a network. This package renders small synthetic pages
with PIL and writes them to disk exactly as the real releases lay them out, so the demo goes
through the same readers as real data. Every generator is deterministic: the same seed gives the
same JSON and the same image bytes, because each page draws from its own string-seeded
``random.Random`` (string seeds hash with SHA-512, independent of ``PYTHONHASHSEED``).

Modules: ``vocabulary`` (words and values), ``drawing`` (fonts, word boxes, the page canvas),
``forms`` (FUNSD, with links), ``receipts`` (CORD), ``pages`` (RVL-CDIP), ``questions`` (DocVQA),
``cache`` (generate once per task).
"""

from __future__ import annotations

from pathlib import Path

from aetnet.data.demo.cache import DEMO_VERSION, demo_cache_dir, ensure_demo
from aetnet.data.demo.forms import make_funsd_demo
from aetnet.data.demo.pages import make_rvl_cdip_demo, render_rvl_cdip_page
from aetnet.data.demo.questions import make_docvqa_demo
from aetnet.data.demo.receipts import make_cord_demo
from aetnet.data.demo.vocabulary import RVL_CDIP_CLASSES

__all__ = ["DEMO_VERSION", "RVL_CDIP_CLASSES", "corpus_path", "demo_cache_dir", "ensure_demo", "make_cord_demo",
           "make_docvqa_demo", "make_funsd_demo", "make_rvl_cdip_demo", "render_rvl_cdip_page"]


def corpus_path() -> Path:
    """Path of the plain-English text that trains the tiny offline BPE tokenizer (``--base tiny``)."""
    return Path(__file__).resolve().parent.parent / "corpus.txt"
