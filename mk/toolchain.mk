# Targets for toolchain (see Makefile).
# The Go-built toolchain, the local cluster and the container engine live outside the repo (hack/*.sh);
# `make test` never builds or starts them -- their checks in tests/toolchain/ start what they need or skip.

.PHONY: tools lint-workflows toolchain toolchain-manifest cluster-up cluster-down container-engine container-engine-down \
	bench-node kind-node-image

toolchain: ## Build the pinned toolchain (hack/versions.env) from Go modules into ~/.cache; idempotent
	nice -n 19 hack/toolchain.sh build

toolchain-manifest: ## Print what the toolchain holds (versions, modules, sha256, build times)
	hack/toolchain.sh manifest

# FAKE_NODE=1: kwok plays the node (no container runs), for admission-only checks and scale runs.
cluster-up: toolchain ## Start the local cluster: a real node with DNS, NetworkPolicy engine and registry localhost:5001 (FAKE_NODE=1: kwok)
	hack/cluster.sh up $(if $(FAKE_NODE),--fake-node)

cluster-down: ## Stop the local cluster, undo the node's host changes and delete its data
	hack/cluster.sh down

container-engine: ## Install podman, serve its Docker API (DOCKER_HOST), build the local Python base image
	hack/container-engine.sh up

container-engine-down: ## Stop the podman API service
	hack/container-engine.sh stop

bench-node: venv ## Real node: cluster up to node Ready, a 2-replica Deployment to Ready, the node daemons' memory; writes .bench/node.json
	$(PY) bench/node.py --out .bench/node.json

KIND_VERSION := $(shell sed -n 's/^KIND_VERSION=//p' hack/versions.env)
ACTIONLINT_VERSION := $(shell sed -n 's/^ACTIONLINT_VERSION=//p' hack/versions.env)

tools: ## Install the pinned project-local tools (kind, actionlint: hack/versions.env) into ./bin with go install
	@command -v go >/dev/null || { echo "tools: go not found: install Go (https://go.dev/doc/install, or apt-get install golang-go)" >&2; exit 2; }
	GOBIN="$(CURDIR)/bin" go install sigs.k8s.io/kind@$(KIND_VERSION)
	GOBIN="$(CURDIR)/bin" go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	@echo "tools: $$(bin/kind version), actionlint $$(bin/actionlint -version | head -n 1) in ./bin (the make targets put ./bin on PATH)"

# shellcheck, when on PATH, also checks the run: scripts (a missing one is skipped silently).
lint-workflows: ## Lint .github/workflows/*.yml with actionlint from ./bin (make tools)
	@test -x bin/actionlint || { echo "lint-workflows: bin/actionlint not found: run make tools" >&2; exit 2; }
	bin/actionlint .github/workflows/*.yml

# kind without Docker (infra/kind.sh on podman): make up CLUSTER=kind builds them itself when missing.
kind-node-image: ## Build the kind node image and registry image from the toolchain and Debian (hack/kind-node.sh; cached by inputs)
	hack/kind-node.sh build
	hack/kind-node.sh registry-image
