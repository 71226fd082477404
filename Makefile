# intelwatt-console: the two commands are `make run` and `make test`. Every target is idempotent:
# a second run reuses .venv (reinstalled only when pyproject.toml changes).

SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSDEPS_STAMP := $(VENV)/.system-deps
# Test peers: the Azure Storage emulator (npm) and the Azure ML scoring server (its own venv: strict pins).
TOOLS := .tools
AZURITE := $(TOOLS)/node_modules/.bin/azurite-blob
SCORING_VENV := .venv-scoring
SCORING_STAMP := $(SCORING_VENV)/.installed
# azure-ai-ml validates the Azure ML YAML offline; its pins clash with the scoring server's.
SDK_VENV := .venv-azureml-sdk
SDK_STAMP := $(SDK_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv system-deps test-peers run test lint format bench soak nightly-reliability agents audit screenshots package clean

help:
	@echo "make run      start the console on the embedded demo plant (installs everything first)"
	@echo "make test     install everything the tests need and run the whole suite"
	@echo "make lint     ruff, ruff format --check, mypy (strict outside app/ui), import-linter"
	@echo "make bench    run every benchmark under bench/"
	@echo "make soak     1M-tick soak with random faults (bench/soak.py)"
	@echo "make agents   re-train and sign the shipped agent packages ro, hsbro, uf (about 35 min)"
	@echo "make audit    pip-audit of the pinned dependencies (needs internet access)"
	@echo "make screenshots  render the main views under Xvfb into docs/screenshots/"
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

$(AZURITE):
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error azurite@3.35.0

$(SCORING_STAMP): packaging/azureml/requirements.txt
	test -x $(SCORING_VENV)/bin/python || $(PY) -m venv $(SCORING_VENV)
	$(SCORING_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SCORING_VENV)/bin/python -m pip install --quiet -r packaging/azureml/requirements.txt
	touch $@

$(SDK_STAMP): packaging/azureml/sdk-requirements.txt
	test -x $(SDK_VENV)/bin/python || $(PY) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SDK_VENV)/bin/python -m pip install --quiet -r packaging/azureml/sdk-requirements.txt
	touch $@

test-peers: $(AZURITE) $(SCORING_STAMP) $(SDK_STAMP)

run: venv system-deps
	$(VENV)/bin/intelwatt console --demo

test: venv system-deps test-peers
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

# 1M accelerated control steps with random faults: RSS growth, ledger chain, outbox delivery.
soak: venv
	$(PYTHON) -m bench.soak

# The fault matrix and fuzzing at full size (100 server restarts, >= 10k fuzz cases): about 15 min.
nightly-reliability: venv system-deps test-peers
	INTELWATT_RELIABILITY_FULL=1 QT_QPA_PLATFORM=offscreen $(PYTHON) -m pytest tests/reliability -q -s

# Re-create the shipped agent packages (resources/agents/), seeded: about 30 minutes on 2 cores.
agents: venv
	$(PYTHON) -m app.training.ship_agents --process ro hsbro uf

AUDIT_VENV := $(TOOLS)/audit-venv

# Dependency audit (PyPI advisories; -s osv for OSV). --strict fails when any package could not
# be checked, so an unreachable advisory service is a failure, not a silent pass.
audit: venv
	mkdir -p $(TOOLS)
	test -x $(AUDIT_VENV)/bin/pip-audit || ($(PY) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/pip install --quiet pip-audit)
	$(PYTHON) -m pip freeze --exclude-editable | sed 's/+cpu$$//' > $(TOOLS)/requirements-audit.txt
	$(AUDIT_VENV)/bin/pip-audit --vulnerability-service pypi --strict --no-deps --disable-pip -r $(TOOLS)/requirements-audit.txt

# Real X11 renders of the main views into docs/screenshots/ (README shows them).
screenshots: venv system-deps
	@command -v xvfb-run >/dev/null || { \
		if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth; fi; }
	env -u QT_QPA_PLATFORM xvfb-run -a -s "-screen 0 1600x1000x24" $(PYTHON) -m app.ui.screenshots docs/screenshots

# The PyInstaller bundle, the .deb and the NSIS installer (Linux payload), then the install test:
# dpkg -i, --self-test from the installed tree, dpkg -P (tests marked `package`).
package: venv system-deps
	@command -v makensis >/dev/null || { \
		if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nsis; \
		else echo "make package: install nsis (apt-get install nsis) to build the Windows installer"; fi; }
	bash packaging/build.sh
	QT_QPA_PLATFORM=offscreen $(PYTHON) -m pytest -m package -o faulthandler_timeout=1200 tests/packaging

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
