#!/usr/bin/env bash
# The local cluster's real node (hack/cluster.sh runs it after the control plane): Debian's containerd, runc and CNI
# plugins, the toolchain's kubelet and kube-proxy, a NetworkPolicy engine, CoreDNS as kube-system's kube-dns, and a
# local registry on localhost:5001 (kind's local-registry shape) that containerd pulls from over plain HTTP.
#
#   hack/node.sh install   apt-get install what the node needs from Debian
#   hack/node.sh prepare   install, claim the host's one node, record its sysctls, put the node IP on lo
#   hack/node.sh start     start the node (cluster.sh has started the control plane and written the kubeconfigs)
#   hack/node.sh restart-runtime  stop kubelet and containerd and start them again, as an upgrade of either
#                          would (the pods' containers live on in their shims)
#   hack/node.sh down      stop it and undo every change it made to the host
#   hack/node.sh leftovers print what of the node is still on the host (nothing after `down`)
#
# Host changes, all undone by `down`: the node IP as a /32 on lo; the bridge cm0 and the pods' veths and network
# namespaces; iptables chains (kube-proxy's KUBE-*, the policy engine's KUBE-ROUTER-*, KUBE-POD-FW-* … and
# ipsets, and CM-NODE-CONTAINMENT, which drops pod traffic that would leave the machine); the sysctls that
# kubelet, kube-proxy and the bridge plugin set (recorded before, restored after). Only one node can run per host.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$("$HACK_DIR/toolchain.sh" bin-dir)
STATE=${CLUSTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/cluster}
NODE=$STATE/node
LOGS=$STATE/logs
PIDS=$STATE/pids
LOG_TAG=node
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"

NODE_NAME=local-node
NODE_IP=${CLUSTER_NODE_IP:-10.254.0.1}
POD_SUBNET=10.244.0.0/24
CLUSTER_POD_CIDR=10.244.0.0/16
DNS_SERVICE_IP=10.96.0.10
BRIDGE=cm0
KUBELET_PORT=${CLUSTER_KUBELET_PORT:-10250}
REGISTRY_PORT=5001
REGISTRY=localhost:$REGISTRY_PORT
NODE_IMAGES=$REGISTRY/consul-microservices
LOCK=/run/consul-microservices/node.lock
CONTAINERD_SOCK=$NODE/containerd/containerd.sock
# Host settings the node's daemons change; recorded at `up`, restored at `down`.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
	net.ipv4.conf.all.route_localnet kernel.panic kernel.panic_on_oops vm.overcommit_memory kernel.keys.root_maxkeys
	kernel.keys.root_maxbytes)
DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables ipset conntrack iproute2 procps)
# Started in this order, stopped in reverse.
DAEMONS=(registry containerd kubelet kube-proxy kube-router)

kubectl() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

cmd_install() {
	install_packages "${DEBIAN_PACKAGES[@]}"
	"$HACK_DIR/container-engine.sh" install 2>/dev/null # podman builds the node's own images
}

# take_lock: claim the host's one real node. Check and claim happen under flock, so two clusters starting
# at once cannot both win; a holder counts while its node state exists (created right after the claim) or
# anything of it is still on the host.
take_lock() {
	mkdir -p "$(dirname "$LOCK")" "$NODE"
	local holder
	exec 9>>"$LOCK.flock"
	flock 9
	holder=$(cat "$LOCK" 2>/dev/null || true)
	if [[ -n $holder && $holder != "$STATE" ]] &&
		{ [[ -d $holder/node ]] || CLUSTER_DIR=$holder "$0" leftovers | grep -q .; }; then
		flock -u 9
		rmdir "$NODE" 2>/dev/null || true
		die "a real node of another cluster ($holder) runs on this host: stop it first (CLUSTER_DIR=$holder hack/cluster.sh down)"
	fi
	echo "$STATE" >"$LOCK"
	flock -u 9
}

record_sysctls() {
	local key
	for key in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$key" "$(sysctl -n "$key")"; done >"$NODE/sysctls.before"
}

start_registry() {
	mkdir -p "$NODE/registry"
	cat >"$NODE/registry.yml" <<EOF
version: 0.1
# info: the access log (one line per request) shows what was pushed and pulled.
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: $NODE/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
	# OTEL_TRACES_EXPORTER=none: v3 otherwise exports traces to localhost:4318.
	OTEL_TRACES_EXPORTER=none start_daemon registry "$BIN/registry" serve "$NODE/registry.yml"
	wait_until 30 "the registry on $REGISTRY" curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/"
}

# push_node_image NAME BINARY ARGS...: a one-binary image (FROM scratch) built by podman, pushed to the registry.
push_node_image() {
	local name=$1 binary=$2 context
	shift 2
	context=$(mktemp -d "$NODE/image.XXXXXX")
	cp "$binary" "$context/$name"
	printf 'FROM scratch\nCOPY %s /%s\nENTRYPOINT ["/%s"%s]\n' "$name" "$name" "$name" \
		"$(printf ', "%s"' "$@")" >"$context/Containerfile"
	podman build --quiet --network none --tag "$NODE_IMAGES/$name:local" "$context" >/dev/null
	podman push --quiet --tls-verify=false "$NODE_IMAGES/$name:local" >/dev/null
	rm -rf "$context"
}

push_node_images() {
	log "build and push $NODE_IMAGES/{pause,coredns}:local"
	mkdir -p "$NODE/bin"
	(cd "$HACK_DIR/pause" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$NODE/bin/pause" .)
	push_node_image pause "$NODE/bin/pause"
	push_node_image coredns "$BIN/coredns" -conf /etc/coredns/Corefile
}

start_containerd() {
	mkdir -p "$NODE/containerd" "$NODE/cni/net.d"
	cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_IMAGES/pause:local"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://127.0.0.1:$REGISTRY_PORT"]
EOF
	# The pod network: one bridge and host-local addresses. No masquerading: pods talk only to each other and
	# to this host (see contain_pods). No portmap (hostPort), whose CNI-HOSTPORT-* chains podman's own CNI
	# network shares: the node then owns no CNI-* chain, and leaves podman's alone.
	cat >"$NODE/cni/net.d/10-consul-microservices.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "consul-microservices",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$NODE/cni/ipam"}}
  ]
}
EOF
	start_daemon containerd /usr/bin/containerd --config "$NODE/containerd/config.toml"
	wait_until 30 "containerd" ctr version
}

# The bridge plugin turns on ip_forward; this chain (first in mangle FORWARD, before any ACCEPT of kube-proxy or
# the policy engine) keeps routed pod traffic on the bridge, so pods reach nothing beyond this machine.
contain_pods() {
	iptables -t mangle -N CM-NODE-CONTAINMENT
	iptables -t mangle -A CM-NODE-CONTAINMENT -s "$CLUSTER_POD_CIDR" ! -o "$BRIDGE" -j DROP
	iptables -t mangle -A CM-NODE-CONTAINMENT -d "$CLUSTER_POD_CIDR" ! -i "$BRIDGE" -j DROP
	iptables -t mangle -I FORWARD 1 -j CM-NODE-CONTAINMENT
}

start_kubelet() {
	mkdir -p "$NODE/kubelet"
	cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
oomScoreAdj: 0
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
	start_daemon kubelet "$BIN/kubelet" --config "$NODE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
		--root-dir "$NODE/kubelet" --cert-dir "$NODE/kubelet/pki" --node-ip "$NODE_IP" \
		--hostname-override "$NODE_NAME" --v 1
}

start_kube_proxy() {
	cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $CLUSTER_POD_CIDR
nodePortAddresses: [$NODE_IP/32]
healthzBindAddress: ""
metricsBindAddress: ""
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
	start_daemon kube-proxy "$BIN/kube-proxy" --config "$NODE/kube-proxy.yaml"
}

start_policy_engine() {
	# Only the policy controller (iptables + ipset): no BGP router, service proxy or load balancer, no CNI
	# config of its own, and no listening socket (health and metrics ports off).
	start_daemon kube-router "$BIN/kube-router" --kubeconfig "$STATE/kube-router.kubeconfig" \
		--hostname-override "$NODE_NAME" --run-firewall=true --run-router=false --run-service-proxy=false \
		--run-loadbalancer=false --enable-cni=false --enable-pod-egress=false \
		--service-cluster-ip-range 10.96.0.0/16 --metrics-port 0 --health-port 0 --v 1
}

node_ready() {
	[[ $(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# CoreDNS in kube-system with kind's labels (k8s-app=kube-dns), so the program's DNS egress policy matches it.
start_cluster_dns() {
	kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # cluster.local only. Other names are NXDOMAIN, never forwarded: pods reach nothing beyond this
  # machine, and a forwarder would let them talk out through DNS queries.
  Corefile: |
    cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            ttl 5
        }
        cache 5
    }
    .:53 {
        template ANY ANY {
            rcode NXDOMAIN
        }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        runAsGroup: 65534
        seccompProfile: {type: RuntimeDefault}
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "53"}]
      containers:
        - name: coredns
          image: $NODE_IMAGES/coredns:local
          imagePullPolicy: Always
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
          livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10}
          resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_SERVICE_IP
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
EOF
	wait_until 120 "CoreDNS Ready" kubectl -n kube-system wait --for=condition=Available deployment/coredns --timeout=2s
}

cmd_prepare() {
	[[ $(id -u) == 0 ]] || die "the real node needs root (containerd, network namespaces, iptables)"
	local tool
	for tool in kubelet kube-proxy kube-router coredns registry; do
		[[ -x $BIN/$tool ]] || die "$BIN/$tool not found: run \`make toolchain\`"
	done
	cmd_install
	take_lock
	mkdir -p "$NODE" "$LOGS" "$PIDS"
	[[ -f $NODE/sysctls.before ]] || record_sysctls
	ip addr show dev lo | grep -q " $NODE_IP/32 " || ip addr add "$NODE_IP/32" dev lo
}

cmd_start() {
	[[ -f $NODE/sysctls.before ]] || die "run \`$0 prepare\` first"
	start_registry
	push_node_images
	start_containerd
	contain_pods
	start_kubelet
	wait_until 60 "node $NODE_NAME Ready" node_ready
	start_kube_proxy
	start_policy_engine
	start_cluster_dns
	log "node $NODE_NAME Ready ($NODE_IP); registry $REGISTRY; cluster DNS $DNS_SERVICE_IP"
}

cmd_restart_runtime() {
	pid_of kubelet >/dev/null || die "the node does not run: \`$0 start\` first"
	stop_daemon kubelet
	stop_daemon containerd
	start_containerd
	start_kubelet
	wait_until 60 "node $NODE_NAME Ready" node_ready
	log "kubelet and containerd restarted"
}

# Every pod container goes with its shim; kubelet is already stopped, so nothing restarts them.
# task_removed ID: the task is gone, or stopped and now removed. A function, not `bash -c`: a child shell's ctr
# is the bare binary, which dialled the default socket instead of this node's and waited 10 s for it each time.
task_removed() { ! grep -qx "$1" <<<"$(ctr tasks ls -q)" || ctr tasks rm "$1" >/dev/null; }

remove_containers() {
	local id
	pid_of containerd >/dev/null || return 0
	for id in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
	for id in $(ctr tasks ls -q 2>/dev/null); do wait_until 20 "task $id to stop" task_removed "$id"; done
	for id in $(ctr containers ls -q 2>/dev/null); do ctr containers rm "$id" >/dev/null 2>&1 || true; done
}

# shim_pids: containerd-shim processes of this node (they outlive containerd).
shim_pids() {
	local proc
	for proc in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -q "containerd-shim.*-address $CONTAINERD_SOCK " &&
			echo "${proc#/proc/}"
	done
	return 0
}

# node_mounts: mount points under the node's state, and the pods' network namespaces, deepest first.
node_mounts() {
	awk '{print $2}' /proc/self/mounts | grep -E "^($NODE/|/run/netns/cni-)" | sort -r || true
}

delete_chains() {
	local table chain
	for table in filter nat mangle; do
		for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' |
			grep -E '^(KUBE-|CM-NODE-)' || true); do
			iptables -t "$table" -S | awk -v c="$chain" '$1 == "-A" && $0 ~ "-j " c "( |$)"' |
				sed 's/^-A/-D/' | while read -r rule; do eval "iptables -t $table $rule"; done
			iptables -t "$table" -F "$chain"
		done
		for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' |
			grep -E '^(KUBE-|CM-NODE-)' || true); do
			iptables -t "$table" -X "$chain"
		done
	done
}

restore_sysctls() {
	local line
	[[ -f $NODE/sysctls.before ]] || return 0
	while IFS= read -r line; do sysctl -q -w "$line" >/dev/null; done <"$NODE/sysctls.before"
}

cmd_down() {
	local pid mount
	[[ -d $NODE ]] || return 0
	stop_daemon kubelet
	stop_daemon kube-proxy
	stop_daemon kube-router
	remove_containers
	stop_daemon containerd
	for pid in $(shim_pids); do kill -KILL "$pid" 2>/dev/null || true; done
	stop_daemon registry
	for mount in $(node_mounts); do umount -l "$mount" 2>/dev/null || true; done
	rm -f /run/netns/cni-*
	ip link delete "$BRIDGE" 2>/dev/null || true
	delete_chains
	ipset list -n 2>/dev/null | grep -E '^(KUBE-|TMP-)' | xargs -r -n1 ipset destroy 2>/dev/null || true
	ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
	restore_sysctls
	rm -rf "$NODE"
	[[ $(cat "$LOCK" 2>/dev/null) != "$STATE" ]] || rm -f "$LOCK"
	log "node stopped; host restored"
}

# What of the node is still on the host, one line each (empty after a clean `down`).
cmd_leftovers() {
	local name
	set +o pipefail # an empty grep is the good answer here
	for name in "${DAEMONS[@]}"; do pid_of "$name" >/dev/null 2>&1 && echo "process $name"; done
	shim_pids | sed 's/^/process containerd-shim /'
	node_mounts | sed 's/^/mount /'
	ip -o link show "$BRIDGE" >/dev/null 2>&1 && echo "interface $BRIDGE"
	ip -o link show type veth 2>/dev/null | grep -q "master $BRIDGE" && echo "veth on $BRIDGE"
	ip addr show dev lo | grep -q " $NODE_IP/32 " && echo "address $NODE_IP on lo"
	iptables-save 2>/dev/null | awk '$1 ~ /^:/ {print substr($1, 2)}' | grep -E '^(KUBE-|CM-NODE-)' |
		sed 's/^/iptables chain /'
	ipset list -n 2>/dev/null | grep -E '^(KUBE-|TMP-)' | sed 's/^/ipset /'
	if [[ -f $NODE/sysctls.before ]]; then
		local line
		while IFS= read -r line; do
			[[ $(sysctl -n "${line%%=*}") == "${line#*=}" ]] || echo "sysctl ${line%%=*} changed"
		done <"$NODE/sysctls.before"
	fi
	return 0
}

case "${1:-}" in
install) cmd_install ;;
prepare) cmd_prepare ;;
start) cmd_start ;;
restart-runtime) cmd_restart_runtime ;;
down) cmd_down ;;
leftovers) cmd_leftovers ;;
*) die "usage: $0 install | prepare | start | restart-runtime | down | leftovers" ;;
esac
