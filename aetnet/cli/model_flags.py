"""The flags of the commands that load a model and read pages, declared once: ``predict`` and ``serve`` share
the model's revision, backend, device and OCR mode and the key-value pair flags (``evaluate`` the revision);
``export`` and ``compare`` share the Hub push flags."""

from __future__ import annotations

import argparse

from aetnet.errors import AetnetError

#: What a MODEL argument may be.
MODEL_HELP = "model folder (RUN/model, a run folder or an export) or Hub id OWNER/NAME"


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """The ``MODEL`` positional and ``--revision``."""
    p.add_argument("model", help=MODEL_HELP)
    add_revision_flag(p)


def add_revision_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")


def hub_folders(revision: str | None, first: str | None, *others: str | None) -> list[str | None]:
    """The model arguments with each Hub id turned into its folder in the Hub cache, before the command imports
    PyTorch: a wrong Hub id, a missing revision, a model not in the cache offline or an unreachable Hub is
    reported within a second instead of after the seconds of loading PyTorch and transformers.

    ``revision`` (``--revision``) applies to ``first``; ``others`` are read at their default branch. A local
    folder is returned as given (with ``revision``, that is the one clear error of
    :func:`aetnet.inference.hub.resolve_model`), ``None`` as ``None``.
    """
    from aetnet.inference.hub import resolve_model

    refs = [(first, revision), *((other, None) for other in others)]
    return [None if ref is None else str(resolve_model(ref, rev)) for ref, rev in refs]


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """``--backend``, ``--device`` and ``--ocr``."""
    p.add_argument("--backend", choices=("torch", "onnx", "onnx-int8"), default="torch",
                   help="torch (default), or onnxruntime on an export's model.onnx / model.int8.onnx")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--ocr", choices=("auto", "always", "never"), default="auto",
                   help="auto: PDF text layers where usable, OCR otherwise (default); always: OCR every "
                   "page; never: text layers only (a scanned page is an error). Each record's 'source' "
                   "says which was used")


def add_pair_flags(p: argparse.ArgumentParser) -> None:
    """``--links`` and ``--entity-map`` (key-value pairs from a token model's entities)."""
    p.add_argument("--links", metavar="RELATION_MODEL",
                   help="key-value pairs: a relation model (e.g. funsd-re) linking the entities the token model "
                   "finds; each page record gets 'pairs': [{key, value, key_box, value_box, score}]")
    p.add_argument("--entity-map", metavar="TYPE=TYPE,...",
                   help="with --links: rename the token model's entity types to the relation model's, e.g. "
                   "QUESTION=KEY,ANSWER=VALUE (without it, models whose types share no linked pair are refused)")


def add_push_flags(p: argparse.ArgumentParser, what: str) -> None:
    """``--push-to-hub OWNER/NAME`` (``what``: its help), ``--private`` and ``--revision``."""
    p.add_argument("--push-to-hub", metavar="OWNER/NAME", help=what)
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.add_argument("--revision", help="with --push-to-hub: the branch to push to (created when missing; default main)")


def check_push_flags(args: argparse.Namespace) -> None:
    """``--private`` and ``--revision`` only with ``--push-to-hub``."""
    if (args.private or args.revision) and not args.push_to_hub:
        raise AetnetError("--private and --revision apply to --push-to-hub OWNER/NAME; add it or drop them")
