"""The ``aetnet`` command: one small module per subcommand.

User errors (:class:`aetnet.errors.AetnetError`) are printed as one line without a traceback and
exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from aetnet.errors import AetnetError

SUBCOMMANDS = ("finetune", "evaluate", "inspect", "recipes", "export", "predict", "compare", "convert", "formats",
               "serve", "ocr", "cache")

EPILOG = """examples:
  aetnet finetune funsd --demo                       # offline, tiny model, ~1 minute on CPU
  aetnet finetune funsd --base microsoft/layoutlmv3-base --data path/to/FUNSD
  aetnet finetune funsd --strategy aet --demo
  aetnet evaluate runs/funsd-full-*/model --data path/to/FUNSD
  aetnet inspect funsd --data path/to/FUNSD --json
  aetnet recipes ls
"""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="aetnet",
        description="Fine-tune LayoutLMv3 document models with Alignment-Enriched Tuning (AETNet).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"aetnet.cli.{name}").add_parser(sub)
    return parser


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    """The parser, built once per process: a parse leaves it as it was (every choice, default and help text
    is fixed when it is built), and building it takes about 9 ms, paid by every call of :func:`main` from
    Python (a notebook, a script looping over folders, the tests)."""
    return build_parser()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aetnet`` console script; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = _parser()
    # key=value overrides may come after options; argparse would otherwise reject them.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from aetnet.threads import respect_omp_thread_limit

    respect_omp_thread_limit()
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except AetnetError as exc:
        if args.debug:
            raise
        print(f"aetnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aetnet: interrupted; resume with --resume and the same --output", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`aetnet formats show pages | head`): stop quietly; point stdout at
        # /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
