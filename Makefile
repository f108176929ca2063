# tumorlab — the two commands:
#   make demo   create .venv (or use the active virtual environment), install tumorlab, generate synthetic
#               MRI phantoms on first use, train + test the multi-task U-Net, print the test metrics
#   make test   install the dev extras into the same environment and run the test suite
#   make test-fast   the same without the tests marked slow
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
BIN := $(VIRTUAL_ENV)/bin
else
BIN := $(VENV)/bin
endif
PIP := $(BIN)/python -m pip --disable-pip-version-check
DEMO_DATA ?= data/synth/lgg
PYTEST_ARGS ?=

.PHONY: install dev demo test test-fast lint clean

install: $(BIN)/.tumorlab-installed
dev: $(BIN)/.tumorlab-dev-installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.tumorlab-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

# W&B's sweep engine (for the sweep tests) declares numpy<2 but runs on numpy 2: install it without its pins.
$(BIN)/.tumorlab-dev-installed: pyproject.toml $(BIN)/.tumorlab-installed
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps 'sweeps==0.3.0'
	touch $@

# data.csv is written last, so its presence marks a complete phantom set.
$(DEMO_DATA)/kaggle_3m/data.csv: | $(BIN)/.tumorlab-installed
	$(BIN)/tumorlab synth --layout lgg --out $(DEMO_DATA) --patients 24 --seed 0 --overwrite

demo: $(BIN)/.tumorlab-installed $(DEMO_DATA)/kaggle_3m/data.csv
	$(BIN)/tumorlab fit --config configs/demo.yaml --data.root $(DEMO_DATA) --run.test_after_fit true

# pytest exits 5 when it collected no test: that is a failure, not a pass.
test: $(BIN)/.tumorlab-dev-installed
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The quick tier for many runs a day: everything but the tests marked slow (DDP, SIGKILL resume, every config),
# on two worker processes (pytest-xdist), one thread each (two threads each would oversubscribe two cores).
test-fast: $(BIN)/.tumorlab-dev-installed
	@OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" -n 2 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(BIN)/.tumorlab-dev-installed
	$(BIN)/ruff check tumorlab tests benchmarks

clean:
	rm -rf runs wandb .pytest_cache .ruff_cache
