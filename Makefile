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
# The policy pack's own venv (policy/requirements.txt says why it is apart); its tests add the
# program's pins and pytest to it.
POLICY_VENV := policy/.venv
POLICY_STAMP := $(POLICY_VENV)/.installed
POLICY_TEST_STAMP := $(POLICY_VENV)/.installed-test

.PHONY: help venv deploy-venv policy-venv test fresh-machine lint fmt

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## Create .venv and install the pinned dependencies
deploy-venv: $(DEPLOY_STAMP)
policy-venv: $(POLICY_STAMP) ## Create policy/.venv, the policy pack's environment (make up and preview run the pack)

# The services are the folders with a manifest (services/<name>/service.yaml, infra/catalog.py).
SERVICES := $(patsubst services/%/service.yaml,%,$(wildcard services/*/service.yaml))
# A service with tests of its own (services/<name>/tests/, as `make service` makes it) runs them in an
# environment of its own (hack/service-tests.sh), so it pins what it needs. The others (the tutorial's
# two, tested from tests/services/) share the dev venv, which installs their pins.
OWN_TESTS := $(patsubst services/%/tests/,%,$(wildcard services/*/tests/))
SERVICE_REQUIREMENTS := $(wildcard $(patsubst %,services/%/requirements.txt,$(filter-out $(OWN_TESTS),$(SERVICES))))

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

$(POLICY_STAMP): policy/requirements.txt
	$(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install --quiet --upgrade pip
	$(POLICY_VENV)/bin/pip install --quiet -r policy/requirements.txt
	touch $@

$(POLICY_TEST_STAMP): $(POLICY_STAMP) policy/requirements-test.txt infra/requirements.txt
	$(POLICY_VENV)/bin/pip install --quiet -r policy/requirements-test.txt
	touch $@

test: venv stubs $(POLICY_TEST_STAMP) ## Run every test (services, program under mocks, policy pack, toolchain checks when present)
	$(PY) -m pytest
	$(POLICY_VENV)/bin/python -m pytest policy/tests
	$(if $(OWN_TESTS),PYTHON=$(PYTHON) hack/service-tests.sh $(OWN_TESTS))

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
