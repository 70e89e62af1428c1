"""``aetnet predict MODEL FILE_OR_FOLDER...``: predict pages of images and PDFs (PDF text layers or OCR)."""

from __future__ import annotations

import argparse
import json

from aetnet.cli.model_flags import (
    MODEL_HELP,
    add_model_flags,
    add_pair_flags,
    add_revision_flag,
    hub_folders,
)

EPILOG = """examples:
  aetnet predict runs/funsd-full/model form.png --output preds/ --visualize
  aetnet predict exports/rvl scans/ --output preds/            # every PNG/JPEG/TIFF/PDF in scans/
  aetnet predict exports/docvqa letter.pdf --question "What is the date?"
  aetnet predict exports/funsd form.tif --ocr-lang deu --ocr-psm 6
  aetnet predict exports/funsd born-digital.pdf --ocr never      # PDF text layer only, no Tesseract
  aetnet predict exports/funsd scans/ --backend onnx-int8        # export with --onnx --quantize first
  aetnet predict exports/invoices pages.jsonl                 # your pages, with their own words and boxes
  aetnet predict exports/invoices scans/ --format labelstudio --output tasks.json   # pre-annotations
  aetnet predict --entities exports/funsd --links exports/funsd-re form.png --output kv/ --visualize
  aetnet predict OWNER/NAME form.png               # a model on the Hugging Face Hub (cached; HF_HUB_OFFLINE=1 works)
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict on PNG/JPEG/TIFF/PDF pages with a trained or exported model",
        description="Read every page's words (from a PDF's text layer when it has a usable one, else "
        "Tesseract OCR; see --ocr) and run the model on them. With --output, writes OUT/<stem>.json "
        "(one record per page) per input and prints a summary; without it, prints the records as JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help=f"{MODEL_HELP} (downloaded into the Hub cache once); omit it with "
                   "--entities/--links")
    add_revision_flag(p)
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER",
                   help="PNG, JPEG, TIFF or PDF files, or folders")
    p.add_argument("--entities", metavar="TOKEN_MODEL",
                   help="key-value pairs: token model finding the entities (e.g. a funsd model); needs --links")
    add_pair_flags(p)
    p.add_argument("--question", help="the question, for question-answering (DocVQA) models")
    p.add_argument("--output", help="folder for <stem>.json (and PNGs with --visualize); with --format "
                   "labelstudio, the tasks .json file")
    p.add_argument("--format", choices=("json", "labelstudio"), default="json",
                   help="json: aetnet records; labelstudio: tasks with predictions to import into Label Studio "
                   "(token models)")
    p.add_argument("--image-url-prefix", metavar="URL",
                   help="with --format labelstudio: each task's image is URL + the image's path relative to "
                   "--images-root (or its file name), e.g. https://bucket.example/scans/ or /data/upload/3/")
    p.add_argument("--images-root", metavar="DIR", help="with --image-url-prefix: the folder the URLs are relative to")
    p.add_argument("--local-files-root", metavar="DIR",
                   help="with --format labelstudio: Label Studio's local storage root (LOCAL_FILES_DOCUMENT_ROOT); "
                   "each task's image is /data/local-files/?d=<path relative to DIR>")
    p.add_argument("--visualize", action="store_true", help="write a PNG per page with the prediction drawn")
    p.add_argument("--ocr-lang", help="Tesseract language (default: the one used in training)")
    p.add_argument("--ocr-psm", type=int, help="Tesseract page segmentation mode (default: training's)")
    p.add_argument("--ocr-workers", type=int, default=0,
                   help="processes recognising the pages that need OCR before predicting (default 0: every core; "
                   "1: one page at a time in this process)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="model precision")
    add_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.errors import AetnetError

    inputs = list(args.inputs)
    pairs = bool(args.entities or args.links)
    if pairs:
        if not (args.entities and args.links):
            raise AetnetError("key-value pairs need both --entities TOKEN_MODEL and --links RELATION_MODEL")
        inputs = ([args.model] if args.model else []) + inputs  # no MODEL positional: all are inputs
        entities, links = hub_folders(args.revision, args.entities, args.links)  # --revision: the token model's
    else:
        if args.model is None:
            raise AetnetError("give MODEL and FILE_OR_FOLDER (or --entities and --links)")
        if args.entity_map:
            raise AetnetError("--entity-map applies to key-value pairs (--entities and --links); drop it")
        (model,) = hub_folders(args.revision, args.model)
    from aetnet.predict.predictor import Predictor, predict_paths

    options = dict(device=args.device, dtype=args.dtype, batch_size=args.batch_size, ocr_lang=args.ocr_lang,
                   ocr_psm=args.ocr_psm, ocr=args.ocr, backend=args.backend)
    if pairs:
        from aetnet.predict.pairs import PairPredictor, parse_entity_map

        predictor = PairPredictor(entities, links, parse_entity_map(args.entity_map), **options)
    else:
        predictor = Predictor(model, **options)
    if args.format == "labelstudio":
        return write_labelstudio(predictor, args, inputs)
    if args.image_url_prefix or args.images_root or args.local_files_root:
        raise AetnetError("--image-url-prefix, --images-root and --local-files-root go with --format labelstudio")
    # with --output the records stream to the files; only a summary of each page is kept for the terminal
    results = predict_paths(predictor, inputs, args.output, args.question, args.visualize, args.ocr_workers,
                            keep=None if args.output is None else page_summary)
    if args.output is None:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    else:
        for path, summaries in results.items():
            print(f"{path}: {len(summaries)} page(s); " + "; ".join(summaries))
        print(f"wrote {len(results)} file(s) to {args.output}")
    return 0


def page_summary(r: dict) -> str:
    """What was found on one page, in a few words (``p2: 41 words, 7 entities``)."""
    if r["kind"] == "token":
        pairs = f", {len(r['pairs'])} key-value pairs" if "pairs" in r else ""
        return f"p{r['page']}: {len(r['words'])} words, {len(r['entities'])} entities{pairs}"
    if r["kind"] == "sequence":
        return f"p{r['page']}: {r['label']} ({r['score']:.2f})"
    ans = r.get("answer")
    said = f"'{ans['text']}' ({ans['score']:.2f})" if ans else "no answer"
    return f"p{r['page']}: {said}"


def write_labelstudio(predictor, args: argparse.Namespace, inputs: list[str]) -> int:
    """Predict, then write Label Studio tasks whose ``predictions`` are the model's entities (and, with
    ``--entities/--links``, the key -> value relations), and the labelling configuration beside them.

    Pages of PDFs and multi-page TIFFs are saved as PNGs in ``<output stem>_images/`` (Label Studio shows
    images); single images and pages files refer to their own image, as a URL with ``--image-url-prefix``
    or ``--local-files-root``.
    """
    from pathlib import Path

    from aetnet.data.documents.labelstudio_out import entity_types, labelling_config, predictions_to_tasks
    from aetnet.data.documents.labelstudio_refs import image_url
    from aetnet.data.ocr.inputs import load_pages
    from aetnet.errors import AetnetError
    from aetnet.predict.predictor import predict_paths

    token = predictor.entities if args.entities else predictor
    if token.kind != "token":
        raise AetnetError(f"--format labelstudio writes token pre-annotations; the model is a {token.kind} "
                          "model: use --format json")
    if not args.output or Path(args.output).suffix.lower() != ".json" or args.visualize:
        raise AetnetError("--format labelstudio needs --output TASKS.json (a file, not a folder) and no --visualize")
    if args.local_files_root and (args.image_url_prefix or args.images_root):
        raise AetnetError("give --local-files-root, or --image-url-prefix (with --images-root), not both")
    if args.images_root and not args.image_url_prefix:
        raise AetnetError("--images-root goes with --image-url-prefix URL")
    roots = [Path(r) if r else None for r in (args.images_root, args.local_files_root)]
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    records, files = [], []
    for path, pages in predict_paths(predictor, inputs, None, args.question, False).items():
        rendered = None
        for record in pages:
            if record.get("image"):
                files.append(Path(record["image"]))
            elif len(pages) == 1 and Path(path).suffix.lower() != ".pdf":
                files.append(Path(path))
            else:
                rendered = rendered or load_pages(path)
                folder = out.parent / f"{out.stem}_images"
                folder.mkdir(exist_ok=True)
                image = folder / f"{Path(path).stem}-page{record['page']}.png"
                rendered[record["page"] - 1].save(image)
                files.append(image)
            records.append(record)
    refs = [image_url(f, args.image_url_prefix, *roots) for f in files]
    version = model_version(token.model_dir, token.meta)
    if args.entities:
        version += "+" + model_version(predictor.links.model_dir, predictor.links.meta)
    tasks = predictions_to_tasks(records, refs, model_version=version)
    out.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    config = out.with_name(f"{out.stem}.config.xml")
    config.write_text(labelling_config(entity_types(token.labels or [])), encoding="utf-8")
    print(f"wrote {len(tasks)} Label Studio task(s) with predictions to {out} and the labelling configuration "
          f"they need to {config}")
    if not (args.image_url_prefix or args.local_files_root):
        print("note: the tasks name the images by local path; Label Studio shows images by URL: pass "
              "--local-files-root or --image-url-prefix")
    return 0


def model_version(folder, meta: dict) -> str:
    """A name for the model that Label Studio shows beside each prediction: task, strategy and a digest of
    the weight files and metadata (the same model gives the same name wherever its folder is)."""
    import hashlib

    from aetnet.inference.backends import META_FILE, model_folder

    folder = model_folder(folder)
    digest = hashlib.sha256((folder / META_FILE).read_bytes())
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        with path.open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return f"aetnet-{meta.get('task', 'model')}-{meta.get('strategy', 'full')}-{digest.hexdigest()[:10]}"
