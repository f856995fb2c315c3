#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, from the toolchain's binaries (hack/toolchain.sh): etcd,
# kube-apiserver (PodSecurity admission on), kube-controller-manager, kube-scheduler, and kwok, which plays the
# kubelet of one fake node so that scheduled pods become Ready. A default StorageClass with pre-made PVs lets
# StatefulSets' volume claims bind.
#
#   hack/cluster.sh up           start (a fresh cluster; no-op when already running)
#   hack/cluster.sh down         stop every process and delete the cluster's data
#   hack/cluster.sh status       exit 0 when every process runs and the API answers
#   hack/cluster.sh kubeconfig   print the kubeconfig path
#
# Ports (loopback only) and paths can be moved with the CLUSTER_* variables below.
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
NODE_NAME=kwok-node-0
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16

PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
KUBECONFIG_FILE=$STATE/kubeconfig
# Started in this order, stopped in reverse.
PROCESSES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
	printf 'cluster: %s\n' "$*" >&2
	exit 1
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# pid_of NAME: the pid of a running cluster process, checked against its binary (guards against pid reuse).
pid_of() {
	local pid
	pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$BIN/$1 " && echo "$pid"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_until() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${deadline}s waiting for $what (logs: $LOGS)"
		sleep 0.5
	done
}

# start NAME ARGS...: run a toolchain binary detached from the terminal, logging to $LOGS/NAME.log.
start() {
	local name=$1
	shift
	[[ -x $BIN/$name ]] || die "$BIN/$name not found: run \`make toolchain\`"
	log "start $name (log: $LOGS/$name.log)"
	setsid "$BIN/$name" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
	echo $! >"$PIDS/$name.pid"
}

check_ports_free() {
	local port
	for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$CM_PORT" "$SCHED_PORT"; do
		if ss -ltnH "sport = :$port" | grep -q .; then
			die "port $port on loopback is in use; set the CLUSTER_*_PORT variables (see hack/cluster.sh)"
		fi
	done
}

make_pki() {
	local user
	mkdir -p "$PKI"
	log "generate CA, serving certificate, service-account key and tokens in $PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=consul-microservices-local-ca \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$PKI/apiserver.key" \
		-out "$PKI/apiserver.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
		-out "$PKI/apiserver.crt" -extfile <(printf 'subjectAltName=%s\n' \
		"IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local") \
		2>/dev/null
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
	# Static tokens: the control-plane users get their bootstrap RBAC roles; admin and kwok are cluster admins.
	: >"$PKI/tokens.csv"
	write_token admin admin system:masters
	write_token kube-controller-manager system:kube-controller-manager ""
	write_token kube-scheduler system:kube-scheduler ""
	write_token kwok kwok system:masters
}

# write_token NAME USER GROUP: a static token for USER, and NAME's kubeconfig using it (admin's is $KUBECONFIG_FILE).
write_token() {
	local name=$1 user=$2 group=$3 token file=$STATE/$1.kubeconfig
	token=$(openssl rand -hex 24)
	printf '%s,%s,%s,"%s"\n' "$token" "$user" "$user" "$group" >>"$PKI/tokens.csv"
	[[ $name == admin ]] && file=$KUBECONFIG_FILE
	"$BIN/kubectl" config --kubeconfig "$file" set-cluster local --server "https://127.0.0.1:$API_PORT" \
		--certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
	"$BIN/kubectl" config --kubeconfig "$file" set-credentials "$name" --token "$token" >/dev/null
	"$BIN/kubectl" config --kubeconfig "$file" set-context local --cluster local --user "$name" >/dev/null
	"$BIN/kubectl" config --kubeconfig "$file" use-context local >/dev/null
}

start_etcd() {
	start etcd --name local --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
		--quota-backend-bytes 2147483648 --log-level warn
	wait_until 30 "etcd health" curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
	start kube-apiserver --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
		--client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" --authorization-mode RBAC \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
		--service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
		--enable-admission-plugins PodSecurity,DefaultStorageClass,ServiceAccount,NamespaceLifecycle \
		--profiling=false
	wait_until 60 "kube-apiserver /readyz" kubectl get --raw /readyz
}

start_controllers() {
	start kube-controller-manager --kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
		--authorization-kubeconfig "$STATE/kube-controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
		--use-service-account-credentials --service-account-private-key-file "$PKI/sa.key" \
		--root-ca-file "$PKI/ca.crt" --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
	start kube-scheduler --kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/kube-scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false --profiling=false
	[[ -f $SHARE/kwok-stages.yaml ]] || die "$SHARE/kwok-stages.yaml not found: run \`make toolchain\`"
	start kwok --kubeconfig "$STATE/kwok.kubeconfig" --config "$SHARE/kwok-stages.yaml" \
		--manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
		--cidr "$POD_CIDR" --node-ip 127.0.0.1 --node-lease-duration-seconds 40
	wait_until 60 "kube-controller-manager /healthz" curl -skf "https://127.0.0.1:$CM_PORT/healthz"
	wait_until 60 "kube-scheduler /healthz" curl -skf "https://127.0.0.1:$SCHED_PORT/healthz"
}

# The fake node (no taint, so ordinary pods schedule), the default StorageClass and its PVs.
apply_objects() {
	local i
	{
		cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, ephemeral-storage: 100Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, ephemeral-storage: 100Gi, pods: "110"}
---
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
	log "node $NODE_NAME, StorageClass standard (default) and $PV_COUNT PVs of 10Gi created"
}

node_ready() {
	[[ $(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

cmd_status() {
	local name
	for name in "${PROCESSES[@]}"; do pid_of "$name" >/dev/null || return 1; done
	kubectl get --raw /readyz >/dev/null 2>&1
}

cmd_up() {
	if cmd_status; then
		log "already running; KUBECONFIG=$KUBECONFIG_FILE"
		return
	fi
	cmd_down >/dev/null
	check_ports_free
	local t0=$SECONDS
	rm -rf "$STATE"
	mkdir -p "$LOGS" "$PIDS"
	make_pki
	start_etcd
	start_apiserver
	start_controllers
	apply_objects
	wait_until 60 "node $NODE_NAME Ready" node_ready
	wait_until 60 "the default ServiceAccount" kubectl get serviceaccount default -n default
	log "cluster ready in $((SECONDS - t0)) s (Kubernetes $(kubectl version -o json | python3 -c \
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
	local name pid i
	for ((i = ${#PROCESSES[@]} - 1; i >= 0; i--)); do
		name=${PROCESSES[i]}
		pid=$(pid_of "$name") || continue
		log "stop $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		if [[ -d /proc/$pid ]]; then
			log "kill $name (pid $pid) after 10 s"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for name in "${PROCESSES[@]}"; do
		! pid_of "$name" >/dev/null || die "$name still running"
	done
	# Keep the logs for post-mortems; the data, keys and PV directories go.
	rm -rf "$PIDS" "$STATE/etcd" "$PKI" "$STATE/volumes" "$STATE"/*.kubeconfig "$KUBECONFIG_FILE"
	log "stopped; no cluster process left"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
kubeconfig) echo "$KUBECONFIG_FILE" ;;
*) die "usage: $0 up | down | status | kubeconfig" ;;
esac
