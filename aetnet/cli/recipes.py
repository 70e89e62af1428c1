"""``aetnet recipes ls|show|cp|keys``: the built-in recipes, and every setting a recipe may hold."""

from __future__ import annotations

import argparse
import json
import shutil
import sys

EPILOG = """examples:
  aetnet recipes ls
  aetnet recipes show funsd/full
  aetnet recipes cp funsd/full my-funsd.yaml && aetnet finetune funsd --recipe my-funsd.yaml
  aetnet recipes keys                 every setting: key, type, default, description
  aetnet recipes keys aet --json      the settings of the aet section, as JSON
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "recipes",
        help="list, show or copy built-in recipes; list every setting (keys)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("ls", "show", "cp", "keys"))
    p.add_argument("name", nargs="?", help="recipe name, e.g. funsd/full (keys: a section, e.g. aet)")
    p.add_argument("dest", nargs="?", help="destination file for cp")
    p.add_argument("--json", action="store_true", help="keys: a JSON list of {key, type, default, description}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.config.recipes import find_recipe, list_recipes
    from aetnet.errors import AetnetError

    if args.action == "keys":
        return print_keys(args.name, args.json)
    if args.action == "ls":
        for name in list_recipes():
            print(name)
        return 0
    if not args.name:
        raise AetnetError(f"`aetnet recipes {args.action}` needs a recipe name; see `aetnet recipes ls`")
    task = args.name.split("/")[0]
    path = find_recipe(args.name, task, "full")
    if args.action == "show":
        sys.stdout.write(path.read_text())
        return 0
    if not args.dest:
        raise AetnetError("`aetnet recipes cp NAME DEST` needs a destination file")
    shutil.copyfile(path, args.dest)
    print(f"copied {args.name} to {args.dest}")
    return 0


def print_keys(section: str | None, as_json: bool) -> int:
    """Print every setting (or those of ``section``): dotted key, type, default and description."""
    from aetnet.config.reference import settings_entries
    from aetnet.errors import AetnetError

    entries = settings_entries()
    if section:
        heads = sorted({e["key"].split(".")[0] for e in entries if "." in e["key"]})
        if section not in heads:
            raise AetnetError(f"`aetnet recipes keys {section}`: no such settings section; choose one of: "
                              f"{', '.join(heads)}")
        entries = [e for e in entries if e["key"].startswith(f"{section}.")]
    entries = [{**e, "description": e["description"].replace("``", "`")} for e in entries]
    if as_json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        print(f"{e['key']}  ({e['type']}, default {e['default']!r})\n    {e['description']}")
    return 0
