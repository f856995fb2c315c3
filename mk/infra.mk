# Targets for infra (see Makefile): deploy the stack with the project's state backend.
#
#   make up                      choose a cluster (kind when docker and kind work, else the local
#                                cluster when the toolchain is built), say which and why, deploy
#   make up CLUSTER=kind         kind: registry + cluster if missing (infra/kind.sh), stack dev
#   make up CLUSTER=minikube     minikube with Calico: start it if missing (infra/minikube.sh), build
#                                into its Docker, stack minikube
#   make up CLUSTER=local        the Docker-free local cluster (hack/cluster.sh), stack local
#   make up CLUSTER=existing STACK=prod   an existing cluster (kubeconfig/context from the stack)
#   make preview / make down     same variables
#   make up UP_FLAGS=--expect-no-changes   extra flags for `pulumi up` (CI's no-op check)
#
# Each first runs hack/preflight.py, which checks every tool the chosen path needs and validates
# CLUSTER and STACK before any state or cluster is touched (below).
#
# State backend, passphrase and which pulumi runs: the project's one convention, hack/pulumi.sh
# (a file backend in .pulumi-state/; the documented passphrase for the local stacks only).

CLUSTER ?=
STACK ?=
UP_FLAGS ?=
# The one place that names the cluster make up makes: infra/kind.sh and infra/minikube.sh take these,
# and so does the program (infra/config.py: kindClusterName, kindRegistryPort, kubeContext). Handed to
# the deploy's commands only, not exported to every recipe (the tests assume them unset).
KIND_CLUSTER ?= consul-microservices
KIND_REGISTRY_PORT ?= 5001
MINIKUBE_PROFILE ?= consul-microservices
CLUSTER_ENV = KIND_CLUSTER="$(KIND_CLUSTER)" KIND_REGISTRY_PORT="$(KIND_REGISTRY_PORT)" \
	MINIKUBE_PROFILE="$(MINIKUBE_PROFILE)"
# The toolchain's binaries (make toolchain), then ./bin (make tools), then the venv win over PATH.
TOOLCHAIN_BIN := $(shell hack/toolchain.sh bin-dir 2>/dev/null)
DEPLOY_PATH := $(TOOLCHAIN_BIN):$(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
# On the Docker-free clusters the docker provider builds the images only where it is at hand (podman does
# otherwise): hack/pulumi.sh then need not try to download it before every command.
PLUGIN_ENV = $(if $(STACK_TARGET),PULUMI_DOCKER_PROVIDER=unused)
PULUMI_RUN = $(CLUSTER_ENV) $(PLUGIN_ENV) hack/pulumi.sh "$(STACK)"
STACK_RUN = $(CLUSTER_ENV) $(PLUGIN_ENV) hack/pulumi-stack.sh "$(STACK)"
PREFLIGHT = PATH="$(DEPLOY_PATH)" TOOLCHAIN_BIN="$(TOOLCHAIN_BIN)" KIND_CLUSTER="$(KIND_CLUSTER)" $(PYTHON) hack/preflight.py

.PHONY: up down preview dev deploy-up deploy-preview deploy-down deploy-dev \
	pulumi-stack target-cluster-up target-cluster-down cluster-stop

up: ## Check the tools, choose the cluster (or CLUSTER=kind|minikube|local|existing), deploy, print how to reach the services
down: ## Destroy the stack, then the cluster make up created (kind, minikube, local); fails when there is nothing to destroy
preview: ## Show what `make up` would change (a stack it creates for this is removed again)
dev: ## make up, then on every save the smallest update that deploys it (one line each, with its time); Ctrl-C stops
up down preview dev:
	@$(MAKE) --no-print-directory deploy-$@ $(CHOSEN)

# The preflight runs while make reads the makefiles, before any recipe, and chooses CLUSTER and STACK for the
# deploy's sub-make. When it refuses, its report is the last thing printed: make then runs nothing and exits 1
# (question mode, -q), without an error line of its own after the report (GNU make 3.81, macOS's, adds one).
# Its status comes back as a word of the output, not as $(.SHELLSTATUS), which make 3.81 lacks.
DEPLOY_GOAL := $(firstword $(filter up down preview dev,$(MAKECMDGOALS)))
ifneq ($(DEPLOY_GOAL),)
PREFLIGHT_OUTPUT := $(shell { command -v $(PYTHON) >/dev/null || { \
	echo "make $(DEPLOY_GOAL): $(PYTHON) not found: apt-get install python3 python3-venv" >&2; exit 2; }; \
	$(PREFLIGHT) $(DEPLOY_GOAL) --cluster "$(CLUSTER)" --stack "$(STACK)"; }; echo "preflight-status=$$?")
CHOSEN := $(filter-out preflight-status=%,$(PREFLIGHT_OUTPUT))
ifneq ($(filter preflight-status=0,$(PREFLIGHT_OUTPUT)),preflight-status=0)
MAKEFLAGS += --question
endif
endif

# Creates the stack if missing; its stack file stays as committed.
pulumi-stack:
	@$(STACK_RUN) init

target-cluster-up:
ifeq ($(CLUSTER),kind)
	$(CLUSTER_ENV) PATH="$(DEPLOY_PATH)" infra/kind.sh up
	$(if $(STACK_TARGET),hack/container-engine.sh start)
else ifeq ($(CLUSTER),minikube)
	$(CLUSTER_ENV) PATH="$(DEPLOY_PATH)" infra/minikube.sh up
else ifeq ($(CLUSTER),local)
	hack/cluster.sh up
	hack/container-engine.sh start
endif

cluster-stop: ## Stop the cluster `make up` started (CLUSTER=kind|minikube|local) when no stack is left to destroy
	@$(if $(filter kind minikube local,$(CLUSTER)),,echo "make cluster-stop: CLUSTER=kind|minikube|local" >&2; exit 2)
	@$(MAKE) --no-print-directory target-cluster-down CLUSTER="$(CLUSTER)"

target-cluster-down:
ifeq ($(CLUSTER),kind)
	$(if $(STACK_TARGET),hack/local-stack.sh stop kind)
	$(CLUSTER_ENV) PATH="$(DEPLOY_PATH)" infra/kind.sh down
	$(if $(STACK_TARGET),hack/container-engine.sh stop)
else ifeq ($(CLUSTER),minikube)
	$(CLUSTER_ENV) PATH="$(DEPLOY_PATH)" infra/minikube.sh down
else ifeq ($(CLUSTER),local)
	hack/cluster.sh down
	hack/container-engine.sh stop
else
	@echo "CLUSTER=$(CLUSTER): the cluster itself stays"
endif

# kind runs on Docker when its daemon answers, else on podman with the project's node image (infra/kind.sh).
KIND_ENGINE = $(if $(filter kind,$(CLUSTER)),$(firstword $(shell infra/kind.sh engine 2>/dev/null)),)
# The Docker-free clusters, whose stacks take per-run values (hack/local-stack.sh): local, and kind on podman.
STACK_TARGET = $(if $(filter local,$(CLUSTER)),local,$(if $(filter podman,$(KIND_ENGINE)),kind,))
# minikube builds straight into the node's Docker daemon, so no push or pull is needed; the Docker-free
# clusters' images go through podman's Docker API into their registry localhost:5001.
DOCKER_ENV = $(if $(filter minikube,$(CLUSTER)),eval "$$(minikube -p $(MINIKUBE_PROFILE) docker-env --shell bash)" &&,)$(if \
	$(STACK_TARGET),DOCKER_HOST="$$(hack/container-engine.sh docker-host)",)
# Those stacks' per-run values (kubeconfig, images, Consul) live in an untracked copy of their stack file,
# written by `hack/local-stack.sh prepare` (make up) and reused by preview and down.
LOCAL_CONFIG = $(if $(STACK_TARGET),$(shell hack/local-stack.sh config-file $(STACK_TARGET)),)
STACK_FLAGS = $(if $(STACK_TARGET),$(if $(wildcard $(LOCAL_CONFIG)),--config-file "$(LOCAL_CONFIG)"),)

deploy-up: deploy-venv policy-venv target-cluster-up
	$(if $(STACK_TARGET),$(CLUSTER_ENV) PATH="$(DEPLOY_PATH)" hack/local-stack.sh prepare $(STACK_TARGET) >/dev/null &&) \
	$(DOCKER_ENV) $(STACK_RUN) up --yes --skip-preview \
		$(if $(STACK_TARGET),--config-file "$(LOCAL_CONFIG)") $(UP_FLAGS)
	@echo
	@$(PULUMI_RUN) stack output --json | $(PY) -c 'import json, sys; out = json.load(sys.stdin); \
		[print(f"{name}:  {hint}") for name, hint in out["portForwards"].items()]; \
		print("Consul UI: ", out["consulUiPortForward"]); \
		"prometheusPortForward" not in out or print("Prometheus:", out["prometheusPortForward"]); \
		print("In-cluster:", json.dumps(out["services"], separators=(",", ":")))'

# The loop needs the dev venv (its watcher, watchfiles); a full update is make up's, without the preflight.
deploy-dev: venv deploy-up
	$(DOCKER_ENV) $(PLUGIN_ENV) $(PY) hack/dev.py --stack "$(STACK)" $(STACK_FLAGS) \
		--full-command "$(MAKE) --no-print-directory deploy-up CLUSTER=$(CLUSTER) STACK=$(STACK)"

deploy-preview: deploy-venv policy-venv
	$(DOCKER_ENV) $(STACK_RUN) preview --diff $(STACK_FLAGS)

# The preflight has checked that the stack exists in the backend; any failure here stops the target.
deploy-down: deploy-venv
	$(DOCKER_ENV) $(PULUMI_RUN) destroy --yes --skip-preview $(STACK_FLAGS)
	$(PULUMI_RUN) stack rm --yes --preserve-config
	$(MAKE) --no-print-directory target-cluster-down CLUSTER="$(CLUSTER)"
