# Targets for services (see Makefile).
.PHONY: stubs bench images postgres service run

# Any engine with a Docker-compatible `build`/`run`; Debian's podman needs runc here (see services/README.md).
CONTAINER_ENGINE ?= podman
IMAGE_BUILD_FLAGS ?=
IMAGE_TAG ?= dev

stubs: venv ## Generate the gRPC stubs from services/protos/example.proto
	$(PY) services/generate_stubs.py

bench: venv stubs postgres ## Benchmark both services on loopback (installs wrk and PostgreSQL from Debian if missing); writes .bench/services.json
	hack/apt-install.sh wrk
	$(PY) bench/services.py --out .bench/services.json

# Debian's server binaries only: the tests and benchmarks start a server of their own (no cluster runs).
postgres: ## Install PostgreSQL from Debian for the services' database tests (they skip without it)
	hack/apt-install.sh postgresql

images: ## Build every service's image with $(CONTAINER_ENGINE) from the one context services/ (IMAGE_BUILD_FLAGS for --build-arg BASE_IMAGE=… etc.)
	@for service in $(SERVICES); do \
		echo "$(CONTAINER_ENGINE) build $$service:$(IMAGE_TAG)"; \
		$(CONTAINER_ENGINE) build $(IMAGE_BUILD_FLAGS) -f services/$$service/Dockerfile \
			--build-arg SERVICE=$$service -t $$service:$(IMAGE_TAG) services || exit; \
	done

# make service NAME=ratings PROTOCOL=http: services/ratings/ from hack/service-templates/http/ (hack/new-service.py).
NAME ?=
PROTOCOL ?=
service: venv ## A new service folder from the project's template: NAME=<name> PROTOCOL=http|grpc (nothing written when refused)
	@$(if $(NAME),,echo "make service: NAME=<name> PROTOCOL=http|grpc" >&2; exit 2)
	@$(PY) hack/new-service.py "$(NAME)" "$(PROTOCOL)"

# make run SERVICE=books-api [CONSUL=agent] [PORT=8080]: one service on loopback with its callees and database.
SERVICE ?=
CONSUL ?= none
run: venv stubs ## Run SERVICE=<name> from the checkout on loopback with its callees (and PostgreSQL, CONSUL=agent); Ctrl-C stops all
	@$(if $(SERVICE),,echo "make run: SERVICE=<name> [CONSUL=agent] [PORT=<port>]" >&2; exit 2)
	@$(PY) hack/run-service.py "$(SERVICE)" --consul "$(CONSUL)" $(if $(PORT),--port "$(PORT)")

# make graph [STACK=dev] [OUT=docs/architecture.svg]: the README's picture, drawn from the manifests and the stack's
# settings (hack/graph.py); tests/deploy/test_graph.py fails when docs/architecture.svg differs from a fresh one.
OUT ?= docs/architecture.svg
.PHONY: graph
graph: venv ## Draw the services, their calls and allowed flows, Consul and each database as SVG (STACK=dev, OUT=docs/architecture.svg)
	$(PY) hack/graph.py --stack "$(or $(STACK),dev)" --out "$(OUT)"
