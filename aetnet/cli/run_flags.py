"""The flags of the commands that run a task, declared once: ``finetune`` and ``compare`` share the data, base,
demo, output and ``key=value`` flags; the setting shortcuts (``--seed``, ``--stride``, ``--on-bad-document``, ...)
are ``key=value`` overrides under a flag, for ``finetune``, ``evaluate`` and ``inspect``. ``--demo`` brings its
settings (:func:`demo_overrides`), applied before the flags and the user's ``key=value`` (later wins)."""

from __future__ import annotations

import argparse

#: What ``--demo`` changes unless the user sets it: a tiny offline model and a short schedule.
#: Per-task step counts come from :func:`demo_overrides` (pages and receipts learn faster than page
#: classes and answers with a tiny random model).
DEMO_OVERRIDES = [
    "train.batch_size=4",
    "train.eval_batch_size=8",
    "train.learning_rate=1e-3",
    "train.warmup_ratio=0.05",
    "train.logging_steps=10",
    "train.save_steps=40",
    "aet.queue_size=16",
    "train.gradient_accumulation_steps=1",
]

DEMO_STEPS = {"funsd": 80, "funsd-re": 600, "cord": 200, "rvl-cdip": 300, "docvqa": 300}

#: Setting shortcuts: flag -> (the setting it sets, its add_argument options).
SETTING_FLAGS: dict[str, tuple[str, dict]] = {
    "--bf16": ("train.bf16", {"action": "store_true", "help": "bfloat16 mixed precision"}),
    "--seed": ("train.seed", {"type": int, "help": "random seed"}),
    "--stride": ("data.stride", {"type": int, "help": "tokens shared by consecutive windows of long documents"}),
    "--box-level": ("data.box_level", {"choices": ("segment", "word"), "help": "segment (entity) or word boxes"}),
    "--on-bad-document": ("data.on_bad_document", {
        "choices": ("error", "skip"),
        "help": "error: stop at the first bad document (default); skip: leave it out, list it and go on"}),
    "--lang": ("data.lang", {"help": "XFUND language (xfund, xfund-re): zh, ja, es, fr, it, de, pt or all"}),
}


def demo_overrides(task: str) -> list[str]:
    """The ``key=value`` settings ``--demo`` applies for ``task`` (user overrides come after them)."""
    return [*DEMO_OVERRIDES, f"train.max_steps={DEMO_STEPS.get(task, 80)}"]


def add_run_flags(p: argparse.ArgumentParser, output: str, overrides: str = "config overrides, e.g. "
                  "train.max_steps=10") -> None:
    """``TASK``, ``--data``, ``--base``, ``--demo``, ``--output`` (``output``: its help) and ``key=value...``
    (``overrides``: its help)."""
    p.add_argument("task", help="task name, e.g. funsd")
    add_data_flag(p)
    p.add_argument("--base", help="LayoutLMv3 hub id or folder, or 'tiny' (offline; the default with --demo)")
    p.add_argument("--demo", action="store_true",
                   help="the embedded demo data (offline), with the tiny base and a short schedule")
    p.add_argument("--output", help=output)
    add_overrides(p, overrides)


def add_data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset folder, save_to_disk folder or hub id")


def add_overrides(p: argparse.ArgumentParser, help: str = "config overrides, e.g. train.max_steps=10") -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help=help)


def add_setting_flags(p: argparse.ArgumentParser, *flags: str) -> None:
    """The setting shortcuts ``flags`` (keys of :data:`SETTING_FLAGS`)."""
    for flag in flags:
        p.add_argument(flag, **SETTING_FLAGS[flag][1])


def setting_overrides(args: argparse.Namespace, *flags: str) -> list[str]:
    """``key=value`` for each of the shortcuts ``flags`` the user gave."""
    out = []
    for flag in flags:
        key = SETTING_FLAGS[flag][0]
        value = getattr(args, flag[2:].replace("-", "_"))
        if value not in (None, False):
            out.append(f"{key}={value}")
    return out


def run_overrides(args: argparse.Namespace, *flags: str) -> list[str]:
    """The demo's settings (with ``--demo``), then the shortcuts ``flags``, then the user's ``key=value``."""
    return (demo_overrides(args.task) if args.demo else []) + setting_overrides(args, *flags) + list(args.overrides)


def run_base(args: argparse.Namespace) -> str | None:
    """``--base``, else ``tiny`` with ``--demo``."""
    return args.base or ("tiny" if args.demo else None)
