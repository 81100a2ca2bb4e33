# `make train` and `make test` work on a fresh clone: they create .venv and install the project first.
# Re-running is cheap: the install step is skipped while pyproject.toml is unchanged.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# The tests run on every CPU (pytest-xdist; at most 4 workers: each holds its own torch). JOBS=0: one process.
JOBS   ?= auto
PYTEST := $(PY) -m pytest -n $(JOBS) --maxprocesses=4 --dist loadgroup

.PHONY: install train test test-fast gpu-check lint format clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install imgcls with its dev extras

train: $(STAMP)  ## train on the default data (MNIST digits); extra overrides via ARGS="augment=strong ..."
	$(PY) train.py $(ARGS)

test: $(STAMP)  ## run the whole test suite (slow end-to-end tests included)
	$(PYTEST) $(ARGS)

test-fast: $(STAMP)  ## skip the tests marked slow
	$(PYTEST) -m "not slow" $(ARGS)

gpu-check: $(STAMP)  ## on a GPU machine: every GPU path in ~5 min, gpu_check.json/.md (ARGS=--dry-run: the plan)
	$(PY) -m imgcls.gpu_check $(ARGS)

lint: $(STAMP)  ## ruff: lint + format check (what CI runs); `make format` fixes what it can
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## ruff: apply the formatter and the safe lint fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## remove run outputs (keeps .venv and data/)
	rm -rf logs/train logs/predict logs/debug logs/bench logs/eda
