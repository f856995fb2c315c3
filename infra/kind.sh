#!/usr/bin/env bash
# kind with kind's documented local registry (https://kind.sigs.k8s.io/docs/user/local-registry/):
# images pushed to localhost:<port> on the host are pulled by the nodes from the same name.
#
#   infra/kind.sh up       create the registry container and the cluster when missing (idempotent)
#   infra/kind.sh down     delete the cluster, the registry container and its volume, and undo what up
#                          changed on the host
#   infra/kind.sh engine   print the container engine kind runs on here (docker or podman) and why
#
# KIND_CLUSTER (default consul-microservices), KIND_REGISTRY_NAME (kind-registry), KIND_REGISTRY_PORT
# (5001) and KIND_WORKERS (0: the control plane runs the pods) shape them; make passes the same
# KIND_CLUSTER and KIND_REGISTRY_PORT to the Pulumi program (infra/config.py). Needs kind and kubectl on
# PATH, and docker or podman. Runs on bash 3.2 (macOS).
#
# The engine: Docker when its daemon answers, as kind itself would choose; nothing else changes for
# Docker's users (kindest/node and registry:2 are pulled). Otherwise podman, through kind's podman
# provider, with a node image and a registry image that the project builds from its Go-built toolchain and
# Debian's packages (hack/kind-node.sh; the machine need reach no container registry). On podman, up prepares
# the host where kind needs it and says what it changed, and down undoes it (hack/kind-host.sh, Linux only:
# /lib/modules, the kind network's DNS, routes to the pods); the pods' subnet is 10.245.0.0/16
# (KIND_POD_SUBNET), apart from the local cluster's 10.244.0.0/16, whose containment rules on this host's
# FORWARD chain would drop traffic between kind's nodes.
#
# The registry's data lives in a named volume, reused when the container is recreated: the stack
# runs images by the digest of a push it made earlier, and a registry that forgot them would leave
# restarting pods unable to pull.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER=${KIND_CLUSTER:-consul-microservices}
REGISTRY=${KIND_REGISTRY_NAME:-kind-registry}
PORT=${KIND_REGISTRY_PORT:-5001}
WORKERS=${KIND_WORKERS:-0}
VOLUME=$REGISTRY-data
POD_SUBNET=${KIND_POD_SUBNET:-10.245.0.0/16}
# On podman, every node mounts this host directory at /var/shared-volumes: the node image's StorageClass
# "shared" keeps its volumes there, so a volume outlives the node that used it, as a network volume does.
SHARED_VOLUMES=${KIND_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/kind}/volumes/$CLUSTER

log() { printf '[kind] %s\n' "$*"; }
die() {
	echo "kind.sh: $*" >&2
	exit 1
}

need_tools() {
	local tool
	for tool in kind kubectl; do
		command -v "$tool" >/dev/null || die "$tool not found on PATH (make up needs kind, kubectl and docker or podman)"
	done
}
case $WORKERS in '' | *[!0-9]*) die "KIND_WORKERS=$WORKERS: expected a number of worker nodes (0-9)" ;; esac
[ "$WORKERS" -le 9 ] || die "KIND_WORKERS=$WORKERS: expected a number of worker nodes (0-9)"

# ENGINE and WHY: Docker when its daemon answers, else podman.
choose_engine() {
	if command -v docker >/dev/null && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
		ENGINE=docker WHY="the docker daemon answers"
	elif command -v podman >/dev/null; then
		ENGINE=podman WHY="docker does not answer; podman is installed"
		# kind would take the docker CLI's presence for a usable Docker.
		export KIND_EXPERIMENTAL_PROVIDER=podman
	else
		die "neither a docker daemon that answers nor podman (make up needs one to run kind's nodes)"
	fi
}
choose_engine

engine() { "$ENGINE" "$@"; }

registry_image() {
	if [ "$ENGINE" = docker ]; then echo registry:2; else "$REPO/hack/kind-node.sh" registry-image; fi
}

registry_up() {
	case "$(engine inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || true)" in
	true) ;;
	false)
		log "starting the stopped registry $REGISTRY"
		engine start "$REGISTRY" >/dev/null
		;;
	*)
		local network=bridge image
		image=$(registry_image)
		# podman: on the kind network from the start (podman 4 cannot connect a running container to a
		# CNI network with DNS).
		[ "$ENGINE" = docker ] || network=kind
		log "starting registry $REGISTRY on 127.0.0.1:$PORT (data in volume $VOLUME)"
		engine run -d --restart=always -p "127.0.0.1:$PORT:5000" --network "$network" \
			-v "$VOLUME:/var/lib/registry" --name "$REGISTRY" "$image" >/dev/null
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

# One node of the kind config; on podman with the shared volumes' directory.
node_config() {
	printf -- '- role: %s\n' "$1"
	if [ "$ENGINE" = podman ]; then
		printf '  extraMounts:\n  - hostPath: \"%s\"\n    containerPath: /var/shared-volumes\n' "$SHARED_VOLUMES"
	fi
}

# The cluster's kind config: the nodes, the registry's certs.d, and on podman the project's node image
# (its images named in kubeadm's config), the pod subnet and the shared volumes' directory.
cluster_config() {
	local i=0
	printf 'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n'
	node_config control-plane
	while [ "$i" -lt "$WORKERS" ]; do
		node_config worker
		i=$((i + 1))
	done
	printf 'containerdConfigPatches:\n- |-\n'
	printf '  [plugins."io.containerd.grpc.v1.cri".registry]\n    config_path = "/etc/containerd/certs.d"\n'
	if [ "$ENGINE" = podman ]; then
		printf 'networking:\n  podSubnet: %s\n' "$POD_SUBNET"
		printf 'kubeadmConfigPatches:\n- |\n'
		"$REPO/hack/kind-node.sh" kubeadm-patch | sed 's/^/  /'
	fi
}

cluster_up() {
	if cluster_exists; then
		log "cluster $CLUSTER exists"
		return
	fi
	local -a image_flag=()
	if [ "$ENGINE" = podman ]; then
		image_flag=(--image "${KIND_NODE_IMAGE:-$("$REPO/hack/kind-node.sh" build)}")
		log "creating cluster $CLUSTER with podman, node image ${image_flag[1]}"
	else
		log "creating cluster $CLUSTER"
	fi
	[ "$ENGINE" = docker ] || mkdir -p "$SHARED_VOLUMES"
	# "${a[@]+...}": an empty array under set -u on bash 3.2.
	cluster_config | kind create cluster --name "$CLUSTER" --wait 120s ${image_flag[@]+"${image_flag[@]}"} \
		--config -
}

wire_registry() {
	# Each node resolves localhost:$PORT to the registry container on the kind network.
	for node in $(kind get nodes --name "$CLUSTER"); do
		engine exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:$PORT"
		printf '[host."http://%s:5000"]\n' "$REGISTRY" |
			engine exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:$PORT/hosts.toml"
	done
	if [ "$ENGINE" = docker ] && [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY")" = null ]; then
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
	need_tools
	log "engine: $ENGINE ($WHY)"
	[ "$ENGINE" = docker ] || "$REPO/hack/kind-host.sh" prepare
	registry_up
	cluster_up
	wire_registry
	[ "$ENGINE" = docker ] || KIND_POD_SUBNET=$POD_SUBNET "$REPO/hack/kind-host.sh" routes
	;;
down)
	need_tools
	if cluster_exists; then
		kind delete cluster --name "$CLUSTER"
	fi
	engine rm -f "$REGISTRY" >/dev/null 2>&1 || true
	engine volume rm "$VOLUME" >/dev/null 2>&1 || true
	# The shared volumes go with their cluster, as node-local ones go with their nodes.
	rm -rf "$SHARED_VOLUMES"
	[ "$ENGINE" = docker ] || "$REPO/hack/kind-host.sh" restore
	;;
engine) echo "$ENGINE ($WHY)" ;;
*)
	echo "usage: $0 up|down|engine" >&2
	exit 2
	;;
esac
