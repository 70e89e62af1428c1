#!/usr/bin/env bash
# Set up everything aetnet needs, idempotently: tesseract-ocr (apt, when root), Chromium and its
# driver for the web page test (apt, when root), a virtual environment in .venv, the CPU build of
# PyTorch when no torch is present, and the package with its test extras. Safe to run again: each
# step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${AETNET_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${AETNET_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${AETNET_EXTRAS:-test}"

can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
apt_install() {  # apt_install [--no-install-recommends] PACKAGE...
  if [ "$apt_updated" = "0" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v tesseract >/dev/null 2>&1; then
  if can_apt; then
    echo "setup: installing tesseract-ocr with apt-get"
    apt_install tesseract-ocr
  else
    echo "setup: Tesseract OCR is missing. Install it, then run this again:" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y tesseract-ocr" >&2
    echo "  macOS:         brew install tesseract" >&2
    exit 1
  fi
fi

# Headless Chromium, chromedriver and a font: only tests/test_serve_browser.py (the web page of `aetnet serve`)
# needs them, so a non-root setup goes on without them and says how to add them (that test fails until then).
browser_missing=()
command -v chromium >/dev/null 2>&1 || browser_missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser_missing+=(chromium-driver)
# Headless Chromium's renderer crashes on a machine without any font ("Unable to receive message from renderer").
if [ -z "$(find /usr/share/fonts /usr/local/share/fonts -type f \( -name '*.ttf' -o -name '*.otf' -o -name '*.ttc' \) \
      -print -quit 2>/dev/null)" ]; then
  browser_missing+=(fonts-liberation)
fi
if [ "${#browser_missing[@]}" -gt 0 ]; then
  if can_apt; then
    echo "setup: installing ${browser_missing[*]} with apt-get (headless browser for the web page test)"
    apt_install --no-install-recommends "${browser_missing[@]}"
  else
    echo "setup: ${browser_missing[*]} missing: tests/test_serve_browser.py will fail until you run" >&2
    echo "  Debian:  sudo apt-get install -y --no-install-recommends ${browser_missing[*]}" >&2
    echo "  others:  Chrome or Chromium and its matching chromedriver on PATH (or CHROMEDRIVER=/path/to/it)" >&2
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
