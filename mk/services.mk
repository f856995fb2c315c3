# Targets for services (see Makefile).
.PHONY: stubs bench images postgres

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
