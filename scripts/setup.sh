#!/usr/bin/env bash
# Set up everything aetnet needs, idempotently: tesseract-ocr (apt, when root), a virtual
# environment in .venv, the CPU build of PyTorch when no torch is present, and the package with
# its test extras. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${AETNET_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${AETNET_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${AETNET_EXTRAS:-test}"

if ! command -v tesseract >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing tesseract-ocr with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null
  else
    echo "setup: Tesseract OCR is missing. Install it, then run this again:" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y tesseract-ocr" >&2
    echo "  macOS:         brew install tesseract" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing PyTorch ($TORCH_SPEC)"
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi

stamp="$VENV/.aetnet-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing aetnet[$EXTRAS]"
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  touch "$stamp"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
