#!/usr/bin/env bash
# A real Kubernetes cluster on this host, from the toolchain's binaries (hack/toolchain.sh): etcd, kube-apiserver
# (Node and RBAC authorization, PodSecurity admission), kube-controller-manager and kube-scheduler, plus one node:
# - by default a real one (hack/node.sh: kubelet, kube-proxy, containerd, a pod network, CoreDNS, a NetworkPolicy
#   engine and the registry localhost:5001), so pods' containers really run. The API server then listens on the
#   node's private address (CLUSTER_NODE_IP, a /32 on lo), which pods reach through the `kubernetes` Service;
# - with --fake-node, kwok plays the kubelet of a fake node: pods become Ready but no container runs. That is for
#   admission-only checks and scale runs; the control plane then listens on 127.0.0.1 only.
# A default StorageClass with pre-made hostPath PVs lets StatefulSets' volume claims bind.
#
#   hack/cluster.sh up [--fake-node]   start (a fresh cluster; when one of that kind already runs, only reclaim)
#   hack/cluster.sh down               stop every process, undo the node's host changes, delete the cluster's data
#   hack/cluster.sh status             exit 0 when every process runs and the API answers
#   hack/cluster.sh reclaim            empty the volumes of deleted claims and make them Available again
#   hack/cluster.sh kubeconfig         print the kubeconfig path
#
# Ports and paths can be moved with the CLUSTER_* variables below.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$("$HACK_DIR/toolchain.sh" bin-dir)
SHARE=$("$HACK_DIR/toolchain.sh" root-dir)/share

STATE=${CLUSTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/cluster}
ETCD_PORT=${CLUSTER_ETCD_PORT:-23790}
ETCD_PEER_PORT=${CLUSTER_ETCD_PEER_PORT:-23800}
API_PORT=${CLUSTER_API_PORT:-16443}
CM_PORT=${CLUSTER_CONTROLLER_MANAGER_PORT:-16257}
SCHED_PORT=${CLUSTER_SCHEDULER_PORT:-16259}
PV_COUNT=${CLUSTER_PV_COUNT:-20}
NODE_IP=${CLUSTER_NODE_IP:-10.254.0.1}
# What the control plane's start-up runs beside the toolchain: certificates, health polls, a port check.
HOST_PACKAGES=(openssl curl iproute2)
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16

PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
KUBECONFIG_FILE=$STATE/kubeconfig
LOG_TAG=cluster
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"

# The node's kind, recorded by `up`: "real" (hack/node.sh) or "fake" (kwok). The rest follows from it.
node_mode() { cat "$STATE/node-mode" 2>/dev/null || echo real; }
listen_ip() { if [[ $(node_mode) == real ]]; then echo "$NODE_IP"; else echo 127.0.0.1; fi; }
node_name() { if [[ $(node_mode) == real ]]; then echo local-node; else echo kwok-node-0; fi; }
# Control-plane processes, started in this order and stopped in reverse.
processes() {
	echo etcd kube-apiserver kube-controller-manager kube-scheduler
	[[ $(node_mode) == real ]] || echo kwok
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

check_ports_free() {
	local port
	for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$CM_PORT" "$SCHED_PORT"; do
		if ss -ltnH "sport = :$port" | grep -q .; then
			die "port $port is in use; set the CLUSTER_*_PORT variables (see hack/cluster.sh)"
		fi
	done
}

# sign NAME SUBJECT [EXTFILE]: a key and a certificate signed by the cluster's CA.
sign() {
	openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
		-out "$PKI/$1.crt" ${3:+-extfile "$3"} 2>/dev/null
}

make_pki() {
	mkdir -p "$PKI"
	log "generate CA, certificates, service-account key and tokens in $PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=consul-microservices-local-ca \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
	printf 'subjectAltName=%s\n' "IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" >"$PKI/apiserver.ext"
	sign apiserver /CN=kube-apiserver "$PKI/apiserver.ext"
	# The API server's client certificate towards the kubelet (logs, exec, port-forward).
	sign kubelet-client /O=system:masters/CN=kube-apiserver-kubelet-client
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	# Static tokens: the control-plane users get their bootstrap RBAC roles; admin is a cluster admin.
	: >"$PKI/tokens.csv"
	write_token admin admin system:masters
	write_token kube-controller-manager system:kube-controller-manager ""
	write_token kube-scheduler system:kube-scheduler ""
	if [[ $(node_mode) == real ]]; then
		write_token kubelet system:node:local-node system:nodes
		write_token kube-proxy system:kube-proxy ""
		# The policy engine watches pods, namespaces and policies cluster-wide.
		write_token kube-router kube-router system:masters
	else
		write_token kwok kwok system:masters
	fi
}

# write_token NAME USER GROUP: a static token for USER, and NAME's kubeconfig using it (admin's is $KUBECONFIG_FILE).
write_token() {
	local name=$1 user=$2 group=$3 token file=$STATE/$1.kubeconfig
	token=$(openssl rand -hex 24)
	printf '%s,%s,%s,"%s"\n' "$token" "$user" "$user" "$group" >>"$PKI/tokens.csv"
	[[ $name == admin ]] && file=$KUBECONFIG_FILE
	"$BIN/kubectl" config --kubeconfig "$file" set-cluster local --server "https://$(listen_ip):$API_PORT" \
		--certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
	"$BIN/kubectl" config --kubeconfig "$file" set-credentials "$name" --token "$token" >/dev/null
	"$BIN/kubectl" config --kubeconfig "$file" set-context local --cluster local --user "$name" >/dev/null
	"$BIN/kubectl" config --kubeconfig "$file" use-context local >/dev/null
}

start_etcd() {
	start_daemon etcd "$BIN/etcd" --name local --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
		--quota-backend-bytes 2147483648 --log-level warn
	wait_until 30 "etcd health" curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
	local ip
	ip=$(listen_ip)
	start_daemon kube-apiserver "$BIN/kube-apiserver" --bind-address "$ip" --advertise-address "$ip" \
		--secure-port "$API_PORT" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" --authorization-mode Node,RBAC \
		--kubelet-client-certificate "$PKI/kubelet-client.crt" --kubelet-client-key "$PKI/kubelet-client.key" \
		--kubelet-preferred-address-types InternalIP,Hostname \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
		--enable-admission-plugins PodSecurity,DefaultStorageClass,ServiceAccount,NamespaceLifecycle,NodeRestriction \
		--profiling=false
	wait_until 60 "kube-apiserver /readyz" kubectl get --raw /readyz
}

start_controllers() {
	start_daemon kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
		--authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
		--use-service-account-credentials --service-account-private-key-file "$PKI/sa.key" \
		--root-ca-file "$PKI/ca.crt" --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
	start_daemon kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --profiling=false
	wait_until 60 "kube-controller-manager /healthz" curl -skf "https://127.0.0.1:$CM_PORT/healthz"
	wait_until 60 "kube-scheduler /healthz" curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"
}

# kwok plays the kubelet of a fake node (no taint, so ordinary pods schedule).
start_fake_node() {
	[[ -f $SHARE/kwok-stages.yaml ]] || die "$SHARE/kwok-stages.yaml not found: run \`make toolchain\`"
	start_daemon kwok "$BIN/kwok" --kubeconfig "$STATE/kwok.kubeconfig" --config "$SHARE/kwok-stages.yaml" \
		--manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
		--cidr "$POD_CIDR" --node-ip 127.0.0.1 --node-lease-duration-seconds 40
	kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, ephemeral-storage: 100Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, ephemeral-storage: 100Gi, pods: "110"}
EOF
}

# The default StorageClass and its PVs: hostPath directories any pod user may write (as kind's provisioner's are).
apply_storage() {
	local i
	for ((i = 0; i < PV_COUNT; i++)); do install -d -m 1777 "$STATE/volumes/$i"; done
	{
		cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
reclaimPolicy: Retain
volumeBindingMode: Immediate
EOF
		for ((i = 0; i < PV_COUNT; i++)); do
			cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-pv-$i
spec:
  storageClassName: standard
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $STATE/volumes/$i}
EOF
		done
	} | kubectl apply -f - >/dev/null
	log "StorageClass standard (default) and $PV_COUNT PVs of 10Gi created"
}

# reclaim_volumes: the volumes of deleted claims (Released; nothing provisions or deletes here) are emptied and made
# Available again, as a provisioner's Delete policy (kind's) would: otherwise each destroyed stack kept its PVs and
# a later one waited forever for a volume (found by the e2e, whose stacks took all $PV_COUNT).
reclaim_volumes() {
	local pv path
	for pv in $(kubectl get pv -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{" "}{end}'); do
		path=$(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
		[[ $path == "$STATE/volumes/"* ]] || continue
		find "$path" -mindepth 1 -delete
		kubectl patch pv "$pv" --type json -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null
		log "volume $pv reclaimed (its claim was deleted)"
	done
}

node_ready() {
	[[ $(kubectl get node "$(node_name)" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

cmd_status() {
	local name
	[[ -f $STATE/node-mode ]] || return 1
	for name in $(processes); do pid_of "$name" >/dev/null || return 1; done
	kubectl get --raw /readyz >/dev/null 2>&1
}

cmd_up() {
	local mode=real t0=$SECONDS
	case "${1:-}" in
	"") ;;
	--fake-node) mode=fake ;;
	*) die "unknown option '$1' (usage: $0 up [--fake-node])" ;;
	esac
	if cmd_status && [[ $(node_mode) == "$mode" ]]; then
		log "already running ($mode node); KUBECONFIG=$KUBECONFIG_FILE"
		reclaim_volumes
		return
	fi
	install_packages "${HOST_PACKAGES[@]}"
	cmd_down >/dev/null
	check_ports_free
	rm -rf "$STATE"
	mkdir -p "$LOGS" "$PIDS"
	echo "$mode" >"$STATE/node-mode"
	# A failed start leaves nothing running and undoes the node's host changes.
	trap 'log "start failed; tearing down"; cmd_down >/dev/null 2>&1' EXIT
	[[ $mode == fake ]] || CLUSTER_DIR=$STATE "$HACK_DIR/node.sh" prepare
	make_pki
	start_etcd
	start_apiserver
	start_controllers
	apply_storage
	if [[ $mode == real ]]; then
		CLUSTER_DIR=$STATE "$HACK_DIR/node.sh" start
	else
		start_fake_node
	fi
	wait_until 60 "node $(node_name) Ready" node_ready
	wait_until 60 "the default ServiceAccount" kubectl get serviceaccount default -n default
	trap - EXIT
	log "cluster ready in $((SECONDS - t0)) s ($mode node, Kubernetes $(kubectl version -o json | python3 -c \
		'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
	kubectl get nodes
	cat <<EOF

Use it with:
  export KUBECONFIG=$KUBECONFIG_FILE      # or: source hack/env.sh
  $BIN/kubectl get nodes
Stop it with: make cluster-down
EOF
}

cmd_down() {
	local -a names
	local i name
	# The node first: its daemons must not outlive the control plane's state.
	CLUSTER_DIR=$STATE "$HACK_DIR/node.sh" down
	read -r -a names <<<"$(processes | tr '\n' ' ')"
	# kube-apiserver stops listening within milliseconds of TERM, then exits only after its 60 s request timeout
	# (measured here); etcd has every write by then and its data is deleted below, so it gets 2 s.
	for ((i = ${#names[@]} - 1; i >= 0; i--)); do
		stop_daemon "${names[i]}" "$([[ ${names[i]} == kube-apiserver ]] && echo 2 || echo 10)"
	done
	# Anything else started beside the cluster with a pid file here (hack/local-stack.sh's Consul agent).
	for name in "$PIDS"/*.pid; do [[ ! -e $name ]] || stop_daemon "$(basename "$name" .pid)"; done
	# Keep the logs for post-mortems; the data, keys and PV directories go.
	rm -rf "$PIDS" "$STATE/etcd" "$PKI" "$STATE/volumes" "$STATE"/*.kubeconfig "$KUBECONFIG_FILE" "$STATE/node-mode"
	log "stopped; no cluster process left"
}

case "${1:-}" in
up) cmd_up "${2:-}" ;;
down) cmd_down ;;
status) cmd_status ;;
reclaim) reclaim_volumes ;;
kubeconfig) echo "$KUBECONFIG_FILE" ;;
*) die "usage: $0 up [--fake-node] | down | status | reclaim | kubeconfig" ;;
esac
