"""``aetnet recipes ls|show|cp``: the built-in recipes."""

from __future__ import annotations

import argparse
import shutil
import sys

EPILOG = """examples:
  aetnet recipes ls
  aetnet recipes show funsd/full
  aetnet recipes cp funsd/full my-funsd.yaml && aetnet finetune funsd --recipe my-funsd.yaml
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "recipes",
        help="list, show or copy built-in recipes",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("ls", "show", "cp"))
    p.add_argument("name", nargs="?", help="recipe name, e.g. funsd/full")
    p.add_argument("dest", nargs="?", help="destination file for cp")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.config.recipes import find_recipe, list_recipes
    from aetnet.errors import AetnetError

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
