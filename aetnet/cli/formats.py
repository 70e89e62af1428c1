"""``aetnet formats show pages``: the documented data formats (JSON Schema)."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet formats show pages            # the JSON Schema of one line of pages.jsonl
"""


def add_parser(sub) -> None:
    p = sub.add_parser("formats", help="show the aetnet data formats",
                       description="Print the JSON Schema of an aetnet data format.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    inner = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = inner.add_parser("show", help="print a format's JSON Schema")
    show.add_argument("name", choices=("pages",), help="the format")
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.data.pages import page_schema

    print(json.dumps(page_schema(), indent=2))
    return 0
