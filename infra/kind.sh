#!/usr/bin/env bash
# kind with kind's documented local registry (https://kind.sigs.k8s.io/docs/user/local-registry/):
# images pushed to localhost:<port> on the host are pulled by the nodes from the same name.
#
#   infra/kind.sh up     create the registry container and the cluster when missing (idempotent)
#   infra/kind.sh down   delete the cluster, the registry container and its volume
#
# KIND_CLUSTER (default consul-microservices), KIND_REGISTRY_NAME (kind-registry) and
# KIND_REGISTRY_PORT (5001) move them; make passes the same KIND_CLUSTER and KIND_REGISTRY_PORT to
# the Pulumi program (infra/config.py). Needs docker and kind on PATH. Runs on bash 3.2 (macOS).
#
# The registry's data lives in a named volume, reused when the container is recreated: the stack
# runs images by the digest of a push it made earlier, and a registry that forgot them would leave
# restarting pods unable to pull.
set -euo pipefail

CLUSTER=${KIND_CLUSTER:-consul-microservices}
REGISTRY=${KIND_REGISTRY_NAME:-kind-registry}
PORT=${KIND_REGISTRY_PORT:-5001}
VOLUME=$REGISTRY-data
REGISTRY_IMAGE=registry:2

log() { printf '[kind] %s\n' "$*"; }

for tool in docker kind kubectl; do
	command -v "$tool" >/dev/null || {
		echo "kind.sh: $tool not found on PATH (make up needs docker, kind and kubectl)" >&2
		exit 1
	}
done

registry_up() {
	case "$(docker inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || true)" in
	true) ;;
	false)
		log "starting the stopped registry $REGISTRY"
		docker start "$REGISTRY" >/dev/null
		;;
	*)
		log "starting registry $REGISTRY on 127.0.0.1:$PORT (data in volume $VOLUME)"
		docker run -d --restart=always -p "127.0.0.1:$PORT:5000" --network bridge \
			-v "$VOLUME:/var/lib/registry" --name "$REGISTRY" "$REGISTRY_IMAGE" >/dev/null
		;;
	esac
}

# Read whole before matching: `kind get clusters | grep -q` under pipefail fails when grep exits
# on the first match and kind, still writing, dies of SIGPIPE.
cluster_exists() {
	local clusters
	clusters=$(kind get clusters 2>/dev/null) || return 1
	grep -qx -- "$CLUSTER" <<<"$clusters"
}

cluster_up() {
	if cluster_exists; then
		log "cluster $CLUSTER exists"
		return
	fi
	log "creating cluster $CLUSTER"
	kind create cluster --name "$CLUSTER" --wait 120s --config - <<-EOF
		kind: Cluster
		apiVersion: kind.x-k8s.io/v1alpha4
		containerdConfigPatches:
		- |-
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    config_path = "/etc/containerd/certs.d"
	EOF
}

wire_registry() {
	# Each node resolves localhost:$PORT to the registry container on the kind network.
	for node in $(kind get nodes --name "$CLUSTER"); do
		docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$PORT"
		printf '[host."http://%s:5000"]\n' "$REGISTRY" |
			docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:$PORT/hosts.toml"
	done
	if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY")" = null ]; then
		docker network connect kind "$REGISTRY"
	fi
	kubectl --context "kind-$CLUSTER" apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: ConfigMap
		metadata:
		  name: local-registry-hosting
		  namespace: kube-public
		data:
		  localRegistryHosting.v1: |
		    host: "localhost:$PORT"
		    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
	EOF
}

case "${1:-}" in
up)
	registry_up
	cluster_up
	wire_registry
	;;
down)
	if cluster_exists; then
		kind delete cluster --name "$CLUSTER"
	fi
	docker rm -f "$REGISTRY" >/dev/null 2>&1 || true
	docker volume rm "$VOLUME" >/dev/null 2>&1 || true
	;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
