"""``aetnet export RUN_DIR --output DIR``: an inference checkpoint (safetensors, config, processor,
model card), optionally with LoRA merged and an ONNX graph."""

from __future__ import annotations

import argparse

from aetnet.cli.model_flags import add_push_flags, check_push_flags

EPILOG = """examples:
  aetnet export runs/funsd-full --output exports/funsd
  aetnet export runs/funsd-lora --output exports/funsd-merged --merge-lora
  aetnet export runs/funsd-full --output exports/funsd --onnx      # needs `pip install aetnet[onnx]`
  aetnet export runs/funsd-full --output exports/funsd --onnx --quantize   # + model.int8.onnx
  aetnet export runs/funsd-full --output exports/funsd --push-to-hub OWNER/NAME --private
  aetnet export runs/funsd-full --push-to-hub OWNER/NAME --revision v2    # output: a temporary folder
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write an inference checkpoint (and optionally ONNX) of a run",
        description="Export RUN_DIR/model as a self-contained folder: safetensors weights, config, tokenizer "
        "and processor, aetnet.json (task, labels, strategy, box level, OCR settings) and a README model "
        "card. "
        "It loads with aetnet.load(DIR) and, for plain LayoutLMv3 models, with transformers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="run folder (holding model/) or model folder")
    p.add_argument("--output", help="export folder (new, empty or an earlier export); required unless "
                   "--push-to-hub (then a temporary folder by default)")
    p.add_argument("--merge-lora", action="store_true", help="fold LoRA adapters into the weights")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx, checked against PyTorch")
    p.add_argument("--quantize", action="store_true",
                   help="with --onnx: also write model.int8.onnx (dynamic int8; run it with --backend onnx-int8)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    add_push_flags(p, "upload the export to this Hugging Face model repository (created when missing); token from "
                   "`huggingface-cli login` or HF_TOKEN")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from aetnet.errors import AetnetError
    from aetnet.export.folder import export_model

    check_push_flags(args)
    if not args.output and not args.push_to_hub:
        raise AetnetError("give --output DIR (the export folder), --push-to-hub OWNER/NAME, or both")
    with tempfile.TemporaryDirectory(prefix="aetnet-export-") as scratch:
        output = args.output or str(Path(scratch) / "export")
        out = export_model(args.run_dir, output, merge_lora=args.merge_lora, onnx=args.onnx,
                           opset=args.opset, quantize=args.quantize)
        if args.output:
            print(f"exported to {out}")
        if args.push_to_hub:
            from aetnet.inference.hub import push_folder

            url = push_folder(out, args.push_to_hub, private=args.private, revision=args.revision)
            print(f"pushed to {args.push_to_hub}" + (f" (branch {args.revision})" if args.revision else "")
                  + f": {url}")
    return 0
