# Thin wrappers; the logic lives in the package and in conf/.
VENV   ?= .venv
PYTHON ?= $(VENV)/bin/python
ARGS   ?=

.PHONY: install train test test-fast lint format bench clean

install:  ## create .venv and install the package with its dev tools
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e ".[dev]"

train:  ## train the default model on synthetic Shapes (generated on first use)
	$(PYTHON) -m captioning.train $(ARGS)

test:  ## the test suite (CPU, under 10 minutes)
	$(PYTHON) -m pytest -q $(ARGS)

test-fast:  ## the suite without the end-to-end runs (marked slow)
	$(PYTHON) -m pytest -q -m "not slow" $(ARGS)

lint:  ## ruff lint + format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

bench:  ## speed ratios against the obvious alternatives -> bench.json
	$(PYTHON) -m benchmarks $(ARGS)

clean:  ## remove tool caches and build files (never outputs/ or data/: those are your runs)
	rm -rf .pytest_cache .ruff_cache build captioning.egg-info
