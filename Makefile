# intelwatt-console: the two commands are `make run` and `make test`. Every target is idempotent:
# a second run reuses .venv (reinstalled only when pyproject.toml changes).

SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSDEPS_STAMP := $(VENV)/.system-deps
PYTEST_ARGS ?=

.PHONY: help venv system-deps run test lint format bench package clean

help:
	@echo "make run      start the console on the embedded demo plant (installs everything first)"
	@echo "make test     install everything the tests need and run the whole suite"
	@echo "make lint     ruff, ruff format --check, mypy (strict outside app/ui), import-linter"
	@echo "make bench    run every benchmark under bench/"
	@echo "make package  build the Linux bundle and .deb"

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PY=/path/to/python3.11)")'
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip wheel
	$(PYTHON) -m pip install --quiet -e ".[gui,training,dev]"
	$(PYTHON) -c 'import torch; assert torch.version.cuda is None, "a CUDA build of torch was installed; pin torch==2.13.0 (CPU)"'
	touch $@

venv: $(STAMP)

# Shared libraries Qt needs (offscreen for tests, xcb for a desktop); installed with apt when missing.
$(SYSDEPS_STAMP): $(STAMP) packaging/system-deps.sh
	bash packaging/system-deps.sh $(VENV)
	touch $@

system-deps: $(SYSDEPS_STAMP)

run: venv system-deps
	$(VENV)/bin/intelwatt console --demo

test: venv system-deps
	QT_QPA_PLATFORM=offscreen $(PYTHON) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv system-deps
	@set -e; for f in bench/[a-z]*.py; do \
		name=$$(basename $$f .py); echo "== bench.$$name"; \
		QT_QPA_PLATFORM=offscreen $(PYTHON) -m bench.$$name; done

package: venv system-deps
	@if [ -x packaging/build.sh ]; then bash packaging/build.sh; \
	else echo "make package: the installers arrive with the packaging work (issue 11)"; exit 1; fi

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
