"""``aetnet export RUN_DIR --output DIR``: an inference checkpoint (safetensors, config, processor,
model card), optionally with LoRA merged and an ONNX graph."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  aetnet export runs/funsd-full --output exports/funsd
  aetnet export runs/funsd-lora --output exports/funsd-merged --merge-lora
  aetnet export runs/funsd-full --output exports/funsd --onnx      # needs `pip install aetnet[onnx]`
  aetnet export runs/funsd-full --output exports/funsd --onnx --quantize   # + model.int8.onnx
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
    p.add_argument("--output", required=True, help="export folder (new, empty or an earlier export)")
    p.add_argument("--merge-lora", action="store_true", help="fold LoRA adapters into the weights")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx, checked against PyTorch")
    p.add_argument("--quantize", action="store_true",
                   help="with --onnx: also write model.int8.onnx (dynamic int8; run it with --backend onnx-int8)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aetnet.export import export_model

    out = export_model(args.run_dir, args.output, merge_lora=args.merge_lora, onnx=args.onnx,
                       opset=args.opset, quantize=args.quantize)
    print(f"exported to {out}")
    return 0
