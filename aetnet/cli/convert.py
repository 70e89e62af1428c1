"""``aetnet convert labelstudio EXPORT.json --images DIR --output pages.jsonl``: annotations to aetnet pages."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  aetnet convert labelstudio export.json --images media/upload/1 --output data/pages.jsonl
  aetnet finetune token --data data/pages.jsonl --base microsoft/layoutlmv3-base
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert annotations (Label Studio) into the aetnet page format",
        description="Convert a Label Studio JSON export of the OCR / key-information template (rectangles, "
        "polygons or rotated boxes with a label and a transcription) into aetnet pages (one JSON line per page). "
        "Every region becomes a segment whose words share its label; regions without text are read with "
        "Tesseract. Every task or region that cannot be converted is listed with its task id and reason in "
        "OUTPUT's folder as <output stem>.problems.jsonl.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conv = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    ls = conv.add_parser("labelstudio", help="a Label Studio JSON export")
    ls.add_argument("export", help="the exported JSON file (Export -> JSON)")
    ls.add_argument("--images", required=True, help="folder holding the task images: Label Studio's media/upload "
                    "(or media/upload/<project>), the local-files storage root, or a folder with the images under "
                    "their relative paths (/data/local-files/?d=a/b.jpg, s3://bucket/a/b.jpg and http URLs are "
                    "looked up by their path under this folder)")
    ls.add_argument("--output", required=True, help="pages .jsonl file to write")
    ls.add_argument("--ocr-lang", default="eng", help="Tesseract language for regions without text")
    ls.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from aetnet.data.documents.jsonl import write_jsonl
    from aetnet.data.documents.labelstudio import convert_export
    from aetnet.data.ocr.tesseract import ocr_image
    from aetnet.errors import AetnetError

    source, images, out = Path(args.export), Path(args.images), Path(args.output)
    try:
        export = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AetnetError(f"{source}: file does not exist; export the project from Label Studio as JSON") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AetnetError(f"{source}: not a JSON export ({exc}); export the project as JSON (not JSON-MIN)") from None
    if not isinstance(export, list):
        raise AetnetError(f"{source}: a Label Studio JSON export is a list of tasks; export as JSON (not JSON-MIN)")
    from aetnet.data.documents.labelstudio import json_min_tasks

    if json_min_tasks(export):
        raise AetnetError(f"{source}: this is a JSON-MIN export, whose flat records keep no region ids, so labels, "
                          "transcriptions and relations cannot be matched to their boxes; export the project as "
                          "JSON (Export -> JSON) and convert that")
    if not images.is_dir():
        raise AetnetError(f"{images}: --images folder does not exist; point it at the task images")
    out.parent.mkdir(parents=True, exist_ok=True)
    pages, problems = convert_export(export, images, out.parent,
                                     lambda path: ocr_image(path, lang=args.ocr_lang))
    write_jsonl(out, pages)
    report = out.with_name(f"{out.stem}.problems.jsonl")
    if problems:
        write_jsonl(report, problems)
    elif report.exists():
        report.unlink()
    print(f"wrote {len(pages)} page(s) from {len(export)} task(s) to {out}"
          + (f"; {len(problems)} problem(s) listed in {report}" if problems else ""))
    return 0
