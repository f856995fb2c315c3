# Targets for the end-to-end run and infra benchmarks (see Makefile).
# Both start every part themselves, private to the run (a cluster on free ports with the real node and
# its registry localhost:5001, podman's Docker API on its own socket, Consul agents, a temporary Pulumi
# backend) and stop it. Neither builds the toolchain: `make toolchain` first.

.PHONY: e2e e2e-ready bench-infra bench-deploy container-engine-install

# What the real-engine runs need from `make toolchain` (tests/e2e/local_stack.py checks the same; kind's node
# image adds kubeadm and local-path-provisioner, tests/e2e/test_kind.py).
E2E_TOOLS := pulumi pulumi-language-python pulumi-resource-kubernetes kubectl consul \
	etcd kube-apiserver kube-controller-manager kube-scheduler kwok \
	kubelet kube-proxy kube-router coredns registry kubeadm local-path-provisioner
E2E_PYTEST_FLAGS ?=
BENCH_DEPLOY_FLAGS ?=

e2e-ready: ## Exit 0 when the toolchain `make e2e` needs is built; otherwise say what is missing
	@missing=""; for tool in $(E2E_TOOLS); do \
		[ -x "$(TOOLCHAIN_BIN)/$$tool" ] || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "e2e: toolchain incomplete in $(TOOLCHAIN_BIN) (missing:$$missing): run \`make toolchain\`"; \
		if command -v kubectl >/dev/null && [ ! -x "$(TOOLCHAIN_BIN)/kubectl" ]; then \
			echo "e2e: the kubectl on PATH ($$(command -v kubectl)) is not used: the cluster runs the toolchain's, at its version"; fi; \
		exit 1; fi

# podman, runc, debootstrap from Debian and the local Python base image (both cached; no process).
container-engine-install:
	hack/container-engine.sh base-image >/dev/null

# CLUSTER=kind: the kind path as a user runs it (make up/down CLUSTER=kind in a copy of the repo, on podman when
# Docker does not answer), then node faults on a kind cluster of three workers; they need the registry port 5001
# that the local cluster's run holds, so they run apart.
KIND_E2E := tests/e2e/test_kind.py tests/e2e/test_nodes.py
E2E_TESTS = $(if $(filter kind,$(CLUSTER)),$(KIND_E2E) --timeout 1800 --session-timeout 4200,tests/e2e \
	$(addprefix --ignore=,$(KIND_E2E)) --timeout 600 --session-timeout 1500)

e2e: venv policy-venv stubs container-engine-install ## Real pulumi preview/up/no-op/change/destroy on the local cluster + container smoke test (~2-5 min, at most 25); CLUSTER=kind: make up/down on kind, node faults on 3 workers
	$(PY) -m pytest $(E2E_TESTS) -m e2e -v --durations=0 $(E2E_PYTEST_FLAGS)

bench-infra: venv stubs ## Program evaluation under Pulumi mocks (the dev stack; 0..100 components); writes .bench/infra.json
	$(PY) bench/infra.py --out .bench/infra.json

bench-deploy: venv stubs container-engine-install ## The deploy loop on the local cluster (floor, cold up, no-op up, change to serving, destroy), by resource; writes .bench/deploy.json
	$(PY) bench/deploy.py --out .bench/deploy.json $(BENCH_DEPLOY_FLAGS)
