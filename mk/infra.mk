# Targets for infra (see Makefile): deploy the stack with a local Pulumi state backend.
#
#   make up                      kind: registry + cluster if missing, then `pulumi up` of stack dev
#   make up CLUSTER=minikube     minikube: start it if missing, build into its Docker (docker-env)
#   make up CLUSTER=existing STACK=prod   an existing cluster (kubeconfig/context from the stack)
#   make preview / make down     same variables
#
# No Pulumi account: the state lives in .pulumi-state/ (file backend). Secrets use
# PULUMI_CONFIG_PASSPHRASE, empty by default for local stacks; set it for shared ones.

CLUSTER ?= kind
STACK ?= $(if $(filter minikube,$(CLUSTER)),minikube,$(if $(filter existing,$(CLUSTER)),prod,dev))
KIND_CLUSTER ?= consul-microservices
MINIKUBE_PROFILE ?= consul-microservices
PULUMI_STATE_DIR ?= $(CURDIR)/.pulumi-state
# The toolchain's pulumi (make toolchain) wins over one on PATH when it exists.
TOOLCHAIN_BIN := $(shell hack/toolchain.sh bin-dir 2>/dev/null)
PULUMI_ENV = PATH="$(TOOLCHAIN_BIN):$(CURDIR)/$(VENV)/bin:$$PATH" \
	PULUMI_BACKEND_URL="file://$(PULUMI_STATE_DIR)" \
	PULUMI_CONFIG_PASSPHRASE="$${PULUMI_CONFIG_PASSPHRASE-}" \
	PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_RUN = $(PULUMI_ENV) pulumi

.PHONY: up down preview pulumi-stack target-cluster-up target-cluster-down

pulumi-stack: venv
	@mkdir -p "$(PULUMI_STATE_DIR)"
	@$(PULUMI_RUN) stack select --create --non-interactive "$(STACK)"
	@if [ "$(CLUSTER)" = minikube ]; then \
		$(PULUMI_RUN) config set --stack "$(STACK)" clusterProfile minikube; \
		$(PULUMI_RUN) config set --stack "$(STACK)" kubeContext "$(MINIKUBE_PROFILE)"; fi

target-cluster-up:
ifeq ($(CLUSTER),kind)
	KIND_CLUSTER="$(KIND_CLUSTER)" infra/kind.sh up
else ifeq ($(CLUSTER),minikube)
	minikube status -p "$(MINIKUBE_PROFILE)" >/dev/null 2>&1 || minikube start -p "$(MINIKUBE_PROFILE)"
endif

target-cluster-down:
ifeq ($(CLUSTER),kind)
	KIND_CLUSTER="$(KIND_CLUSTER)" infra/kind.sh down
else ifeq ($(CLUSTER),minikube)
	minikube delete -p "$(MINIKUBE_PROFILE)"
endif

# minikube builds straight into the node's Docker daemon, so no push or pull is needed.
DOCKER_ENV = $(if $(filter minikube,$(CLUSTER)),eval "$$(minikube -p $(MINIKUBE_PROFILE) docker-env)" &&,)

up: pulumi-stack target-cluster-up ## Create venv, cluster (kind by default) and registry if missing, deploy, print how to reach the services
	$(DOCKER_ENV) $(PULUMI_RUN) up --yes --skip-preview --stack "$(STACK)"
	@echo
	@echo "books-api:  $$($(PULUMI_RUN) stack output --stack "$(STACK)" booksApiPortForward)"
	@echo "Consul UI:  $$($(PULUMI_RUN) stack output --stack "$(STACK)" consulUiPortForward)"
	@echo "In-cluster: $$($(PULUMI_RUN) stack output --stack "$(STACK)" services --json | tr -d '\n ')"

preview: pulumi-stack ## Show what `make up` would change (no build, no cluster changes)
	$(PULUMI_RUN) preview --diff --stack "$(STACK)"

down: venv ## Destroy the stack, then delete the kind cluster and registry (or the minikube profile)
	@mkdir -p "$(PULUMI_STATE_DIR)"
	@if $(PULUMI_RUN) stack select "$(STACK)" >/dev/null 2>&1; then \
		$(PULUMI_RUN) destroy --yes --skip-preview --stack "$(STACK)" && \
		$(PULUMI_RUN) stack rm --yes --preserve-config --stack "$(STACK)"; fi
	$(MAKE) --no-print-directory target-cluster-down CLUSTER="$(CLUSTER)"
