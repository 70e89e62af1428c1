#!/usr/bin/env bash
# Set up what aetnet needs, idempotently. Two purposes:
#   scripts/setup.sh demo   what `make demo` needs: a virtual environment in .venv, the CPU build of
#                           PyTorch when no torch is present, and the package (no extras, no system packages)
#   scripts/setup.sh test   (the default) what `make test` needs: tesseract-ocr and, for the web page test,
#                           Chromium, its driver and a font (apt, when root), then the same with the test extras
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PURPOSE="${1:-test}"
case "$PURPOSE" in
  demo) default_extras="" ;;
  test) default_extras="test" ;;
  *) echo "setup: unknown purpose '$PURPOSE': use 'demo' or 'test'" >&2; exit 2 ;;
esac
VENV="${AETNET_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${AETNET_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${AETNET_EXTRAS-$default_extras}"

can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
apt_install() {  # apt_install [--no-install-recommends] PACKAGE...
  if [ "$apt_updated" = "0" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# System packages: only the test suite needs them (the demo draws its forms, no OCR, no browser).
if [ "$PURPOSE" = "test" ]; then
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

# One stamp per set of extras; an install with extras also holds what the bare package needs.
spec=".${EXTRAS:+[$EXTRAS]}"
stamp="$VENV/.aetnet-installed${EXTRAS:+-$EXTRAS}"
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
if ! fresh "$stamp" && { [ -n "$EXTRAS" ] || ! fresh "$VENV/.aetnet-installed-test"; }; then
  echo "setup: installing aetnet${EXTRAS:+[$EXTRAS]}"
  "$VENV/bin/python" -m pip install -q -e "$spec"
  touch "$stamp"
fi
if [ "$PURPOSE" = "demo" ] && ! command -v tesseract >/dev/null 2>&1; then
  echo "setup: note: Tesseract OCR is not installed; the demo does not need it, but reading scans does:" \
       "sudo apt-get install -y tesseract-ocr (or make setup-test as root)"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
