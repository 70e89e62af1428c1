# Two commands for a newcomer; both set everything up first (idempotent).
#   make demo   fine-tune FUNSD on the embedded demo (offline, tiny model, about a minute on CPU)
#   make test   run the test suite
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/aetnet finetune funsd --demo --output runs/demo-funsd

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs build dist *.egg-info
