"""``aetnet cache ls|clear``: the on-disk window cache (encoded windows, one entry per fingerprint)."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet cache ls                 # entries: key, task, windows, documents, size, created
  aetnet cache ls --json
  aetnet cache clear              # remove every entry (the next run encodes again)
  aetnet cache clear 3f2a9c       # remove the entries whose key starts with 3f2a9c

The cache lives in $AETNET_CACHE/windows (default ~/.cache/aetnet/windows). Runs build an entry the
first time they meet some data with some tokenizer and encoding settings; later runs, every strategy
and seed of a compare, and every process of a distributed run read it. data.window_cache=false turns
it off for a run.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "cache",
        help="list or clear the on-disk window cache",
        description="List or clear the encoded windows that finetune, evaluate and compare keep on disk "
                    "(memory-mapped Arrow files, one entry per data content, tokenizer and encoding settings).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("ls", "clear"))
    p.add_argument("keys", nargs="*", help="with clear: key prefixes of the entries to remove (default: all)")
    p.add_argument("--json", action="store_true", help="ls: print the entries as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from aetnet.data.encoding.store import cache_entries, window_cache_dir
    from aetnet.errors import AetnetError

    entries = cache_entries()
    if args.action == "ls":
        if args.json:
            print(json.dumps(entries, indent=2))
            return 0
        print(f"{window_cache_dir()}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
              f"{sum(e['bytes'] for e in entries) / 2**20:.1f} MiB")
        for e in entries:
            print(f"  {e['key'][:12]}  {e['task'] or '?':<10} {e['windows']:>9,} windows  {e['documents']:>9,} docs  "
                  f"{e['bytes'] / 2**20:8.1f} MiB  {e['created']}")
        return 0
    chosen = [e for e in entries if not args.keys or any(e["key"].startswith(k) for k in args.keys)]
    if args.keys and not chosen:
        raise AetnetError(f"no window cache entry starts with {', '.join(args.keys)}; see `aetnet cache ls`")
    for e in chosen:
        shutil.rmtree(Path(e["path"]))
    if not args.keys:  # everything: also the lock files and what killed builds left behind
        for leftover in window_cache_dir().glob(".*"):
            shutil.rmtree(leftover, ignore_errors=True)
    print(f"removed {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'}, "
          f"{sum(e['bytes'] for e in chosen) / 2**20:.1f} MiB, from {window_cache_dir()}")
    return 0
