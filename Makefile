# Two commands for a newcomer; both set up what they need first (idempotent).
#   make demo        fine-tune FUNSD on the embedded demo (offline, tiny model, about a minute on CPU)
#   make test        run the test suite in parallel (pytest-xdist, one worker per core)
#   make setup-demo  only set up what the demo needs (.venv, PyTorch, aetnet)
#   make setup-test  only set up what the tests need (also tesseract-ocr, Chromium, its driver, a font, the test extra)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-demo setup-test demo test clean

setup: setup-test

setup-demo:
	@bash scripts/setup.sh demo

setup-test:
	@bash scripts/setup.sh test

demo: setup-demo
	$(BIN)/aetnet finetune funsd --demo --output runs/demo-funsd

test: setup-test
	$(BIN)/python -m pytest -q -n auto --dist loadgroup tests

clean:
	rm -rf runs build dist *.egg-info
