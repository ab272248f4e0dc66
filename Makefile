# Two commands matter: `make dev` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: install dev test test-fast lint lock bench bench-peers package invoke clean tools openapi

install: $(STAMP) node_modules/.installed

$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (PYTHON=$(PYTHON))")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node 20+) is required: install Node.js" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The lock files, with every file's hash, generated from pyproject.toml by the uv that the dev
# lock pins: requirements-dev.lock (the project and its tcp and dev extras, any platform from
# Python 3.11), requirements.txt (what the Lambda zip installs: CPython 3.12 on manylinux
# aarch64, at the dev lock's versions) and bench/peers/requirements.lock. A version already
# pinned stays; `make lock LOCK_ARGS="--upgrade-package NAME"` moves one (--upgrade: all).
# Each lock is compiled beside itself (uv keeps the pins it finds there) and replaced only when
# it changed: an unchanged lock keeps its mtime, so the venv is not reinstalled for nothing.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --custom-compile-command "make lock"
define compile_lock
	cp $(1) $(1).new
	$(UV_COMPILE) $(LOCK_ARGS) $(2) -o $(1).new || { rm -f $(1).new; exit 1; }
	if cmp -s $(1).new $(1); then rm $(1).new; else mv $(1).new $(1); fi
endef
lock: $(STAMP)
	$(call compile_lock,requirements-dev.lock,pyproject.toml --extra tcp --extra dev \
		--universal --python-version 3.11)
	$(call compile_lock,requirements.txt,pyproject.toml -c requirements-dev.lock \
		--python-platform aarch64-manylinux_2_17 --python-version 3.12)
	$(call compile_lock,bench/peers/requirements.lock,bench/peers/requirements.in \
		--universal --python-version 3.11)

# promtool checks the alert rules and the exposition format; chromium runs the dev page's
# browser test. Debian ships both; a missing one fails `make test`, never skips a test.
tools:
	@bash scripts/ensure-promtool.sh
	@bash scripts/ensure-chromium.sh

dev: install
	$(BIN)/python -m devstack.dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Coverage of core and handlers, subprocesses included, each at least fail_under (pyproject).
test: install tools lint
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest --cov --cov-report=
	$(BIN)/coverage report --include='core/*'
	$(BIN)/coverage report --include='handlers/*'

# openapi.json is generated from the pydantic models (core/models.py): rerun after changing them.
openapi: install
	$(BIN)/python -m handlers.openapi > openapi.json

bench: install
	$(BIN)/python -m bench

# Peers in their own venv: arq pins redis < 6. BullMQ comes from package-lock.json.
.venv-peers/.installed: bench/peers/requirements.lock
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet -r bench/peers/requirements.lock
	touch $@

bench-peers: install .venv-peers/.installed
	$(BIN)/python -m bench.peers

# STAGE=prod packages what `sls deploy --stage prod --package .serverless` ships.
STAGE ?= dev
package: install
	AWS_EC2_METADATA_DISABLED=true sls package --stage $(STAGE)

# One Lambda function as Lambda calls it, from any shell: `make invoke FN=drain
# EVENT=events/drain.json ARGS="-e DRAIN_IDLE_EXIT_MS=500"` (the venv's python3 comes first).
invoke: install
	AWS_EC2_METADATA_DISABLED=true sls invoke local -f $(FN) --path $(EVENT) $(ARGS)

# The suite without the long end-to-end tests, for the edit-test loop (make test runs all).
test-fast: install tools
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .venv-peers node_modules .serverless .requirements-cache .hypothesis \
		.ruff_cache .mypy_cache .pytest_cache .coverage .coverage.* *.egg-info bench/results.md \
		requirements.txt.new requirements-dev.lock.new bench/peers/requirements.lock.new
	find . -name __pycache__ -type d -not -path './node_modules/*' -prune -exec rm -rf {} +
