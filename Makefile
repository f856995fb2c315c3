# Entry points for users and CI. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
VENV_STAMP := $(VENV)/.installed
# make up/preview/down install only the program's pins (infra/requirements.txt), not the test tools.
DEPLOY_STAMP := $(VENV)/.installed-deploy

.PHONY: help venv deploy-venv test fresh-machine lint fmt

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## Create .venv and install the pinned dependencies
deploy-venv: $(DEPLOY_STAMP)

# The services are the folders with a manifest (services/<name>/service.yaml, infra/catalog.py).
SERVICES := $(patsubst services/%/service.yaml,%,$(wildcard services/*/service.yaml))
SERVICE_REQUIREMENTS := $(wildcard $(SERVICES:%=services/%/requirements.txt))

$(VENV_STAMP): requirements-dev.txt infra/requirements.txt services/common/requirements.txt services/requirements-build.txt $(SERVICE_REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt $(SERVICE_REQUIREMENTS:%=-r %)
	touch $@ $(DEPLOY_STAMP)

$(DEPLOY_STAMP): infra/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r infra/requirements.txt
	touch $@

test: venv stubs ## Run every test (services, program under mocks, toolchain checks when present)
	$(PY) -m pytest

# A newcomer's machine: a clean clone in a minimal Debian with only the README's needs (hack/fresh-machine.sh).
FRESH_COMMAND ?= make test
fresh-machine: ## Run `make test` from a clean clone of HEAD in a fresh Debian rootfs (FRESH_USER=name: as a non-root user)
	FRESH_USER="$(FRESH_USER)" hack/fresh-machine.sh $(FRESH_COMMAND)

lint: venv ## Ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv ## Apply ruff formatting and fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

include mk/services.mk
include mk/infra.mk
include mk/toolchain.mk
include mk/e2e.mk
