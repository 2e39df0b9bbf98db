# Two entry points: `make demo` (train, insert cold-start items, evaluate on real data) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATASET ?= homedepot
RUN := runs/$(DATASET)

.PHONY: install demo test bench clean

# torch first, from the CPU wheel on disk: libpecos would otherwise pull a multi-GB CUDA build.
# any change to the C++ core (cpp/) rebuilds xrmeta._core
$(VENV)/.installed: setup.py pyproject.toml $(wildcard cpp/include/xrmeta/*.hpp cpp/src/*.cpp cpp/python/*.cpp cpp/python/*.hpp)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m xrmeta.train --dataset $(DATASET) --model-dir $(RUN)/model --export-novel $(RUN)/novel.tsv --keep-pecos
	$(PY) -m xrmeta.add_items --model-dir $(RUN)/model --items $(RUN)/novel.tsv
	$(PY) -m xrmeta.evaluate --model-dir $(RUN)/model

test: install
	$(PY) -m pytest -q

# Recall vs latency against peers and every other benchmark, plots in benchmarks/plots/. Each dataset writes its own
# report: BENCHMARKS.md for homedepot (with the synthetic scale check), BENCHMARKS-<dataset>.md for the others.
# QUICK=1: every section on tiny synthetic data (does each run?), report under benchmarks/out/quick/.
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m benchmarks.run --dataset $(DATASET) $(if $(filter homedepot,$(DATASET)),,--no-scale) $(if $(QUICK),--quick)

clean:
	rm -rf runs
