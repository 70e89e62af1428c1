"""``aetnet formats show pages``: the documented data formats (JSON Schema), and the Label Studio
labelling configuration of a token model."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet formats show pages                                   # the JSON Schema of one line of pages.jsonl
  aetnet formats show labelstudio-config exports/invoices     # Label Studio's labelling config for the model
"""


def add_parser(sub) -> None:
    p = sub.add_parser("formats", help="show the aetnet data formats",
                       description="Print the JSON Schema of an aetnet data format, or the Label Studio labelling "
                       "configuration (XML) that a token model's pre-annotations need.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    inner = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = inner.add_parser("show", help="print a format")
    show.add_argument("name", choices=("pages", "labelstudio-config"), help="the format")
    show.add_argument("model", nargs="?", help="labelstudio-config: the token model folder (RUN/model or an export)")
    show.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.errors import AetnetError

    if args.name == "labelstudio-config":
        from aetnet.data.documents.labelstudio_out import entity_types, labelling_config
        from aetnet.inference.backends import read_meta

        if not args.model:
            raise AetnetError("labelstudio-config needs the model: aetnet formats show labelstudio-config MODEL")
        meta = read_meta(args.model)
        if meta.get("kind") != "token" or not meta.get("labels"):
            raise AetnetError(f"{args.model}: a {meta.get('task')} model is a {meta.get('kind')} model; "
                              "Label Studio pre-annotations come from a token model (its labels are the regions')")
        print(labelling_config(entity_types(meta["labels"])), end="")
        return 0
    if args.model:
        raise AetnetError(f"formats show {args.name} takes no model")
    from aetnet.data.documents.pages import page_schema

    print(json.dumps(page_schema(), indent=2))
    return 0
