#!/usr/bin/env bash
# What kind needs of a Linux host to run its nodes on podman (infra/kind.sh, when Docker does not answer), done
# by `prepare` and `routes` with a line for each change, and undone by `restore`:
#   - /lib/modules: kind mounts it into every node, and podman refuses a missing source; a host whose kernel has
#     its modules built in has none, so it is created empty;
#   - names on the kind network: the nodes join the control plane by name and pull from the registry by name,
#     so the network is made with podman's DNS (Debian's CNI setup serves it with the dnsname plugin, installed
#     like podman itself; netavark serves names by itself);
#   - routes from this host to each node's pods (its podCIDR via the node's address), as a host reaches the pods
#     of the local cluster: a Consul agent on this host checks the pods' health at their own addresses.
# The network and /lib/modules serve every kind cluster on podman; each cluster's routes are its own.
#
#   hack/kind-host.sh prepare   /lib/modules and the kind network with DNS
#   hack/kind-host.sh routes    routes to the pods of KIND_CLUSTER's nodes (kubectl context kind-KIND_CLUSTER)
#   hack/kind-host.sh restore   remove KIND_CLUSTER's routes; the network and /lib/modules too when this run
#                               made them and no other kind cluster is left
# State: KIND_STATE_DIR (~/.cache/consul-microservices/kind)/host. Root only (rootful podman, routes).
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=${KIND_CLUSTER:-consul-microservices}
POD_SUBNET=${KIND_POD_SUBNET:-10.245.0.0/16}
NETWORK=kind
HOST_CHANGES=${KIND_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/kind}/host
ROUTES=$HOST_CHANGES/routes-$CLUSTER
LOG_TAG=kind-host
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"

record() {
	mkdir -p "$HOST_CHANGES"
	: >"$HOST_CHANGES/$1"
}

# podman enables DNS on a network it creates only when it can serve it (CNI: with the dnsname plugin).
network_has_dns() {
	[ "$(podman network inspect "$NETWORK" --format '{{.DNSEnabled}}' 2>/dev/null)" = true ]
}

prepare_host() {
	if [[ ! -e /lib/modules ]]; then
		log "created the empty /lib/modules (kind mounts it into every node; this kernel has no modules)"
		mkdir /lib/modules
		record lib-modules
	fi
	if [ "$(podman info --format '{{.Host.NetworkBackend}}')" = cni ]; then
		"$HACK_DIR/apt-install.sh" golang-github-containernetworking-plugin-dnsname
	fi
	if podman network exists "$NETWORK" && ! network_has_dns; then
		[ -z "$(podman ps -aq --filter "network=$NETWORK")" ] ||
			die "podman network $NETWORK has no DNS and containers use it: remove them and the network, then retry"
		log "removing podman network $NETWORK, made without DNS"
		podman network rm "$NETWORK" >/dev/null
	fi
	if ! podman network exists "$NETWORK"; then
		podman network create "$NETWORK" >/dev/null
		record network
		log "created podman network $NETWORK with DNS ($(podman network inspect "$NETWORK" \
			--format '{{range .Subnets}}{{.Subnet}}{{end}}'))"
	fi
}

# One route per node, recorded as "CIDR via ADDRESS" lines. Two clusters with one pod subnet would take each
# other's routes: refused, naming the other.
route_pods() {
	local name cidr address other
	mkdir -p "$HOST_CHANGES"
	for other in "$HOST_CHANGES"/routes-*; do
		[ -f "$other" ] && [ "$other" != "$ROUTES" ] || continue
		! grep -q "^${POD_SUBNET%.0.0/16}\." "$other" ||
			die "kind cluster ${other##*/routes-} routes the pod subnet $POD_SUBNET on this host: give this one another (KIND_POD_SUBNET=10.246.0.0/16)"
	done
	while read -r name cidr address; do
		[ -n "$cidr" ] || die "node $name has no podCIDR yet"
		ip route replace "$cidr" via "$address"
		grep -qx "$cidr via $address" "$ROUTES" 2>/dev/null || echo "$cidr via $address" >>"$ROUTES"
		log "route to $name's pods $cidr via $address"
	done < <(kubectl --context "kind-$CLUSTER" get nodes -o \
		jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
}

restore_host() {
	local cidr
	if [ -f "$ROUTES" ]; then
		# By destination: a node started again may have another address, and the route with it.
		while read -r cidr _; do
			if ip route del "$cidr" 2>/dev/null; then log "removed the route to $cidr"; fi
		done < <(sort -u "$ROUTES")
		rm -f "$ROUTES"
	fi
	# The network and /lib/modules serve every kind cluster on podman: they stay while another has routes.
	if ls "$HOST_CHANGES"/routes-* >/dev/null 2>&1; then
		log "podman network $NETWORK and /lib/modules kept for the other kind clusters"
		return
	fi
	if [ -f "$HOST_CHANGES/network" ] && podman network exists "$NETWORK"; then
		if [ -z "$(podman ps -aq --filter "network=$NETWORK")" ]; then
			podman network rm "$NETWORK" >/dev/null
			log "removed podman network $NETWORK"
		else
			log "podman network $NETWORK kept: other containers use it"
		fi
	fi
	rm -f "$HOST_CHANGES/network"
	if [ -f "$HOST_CHANGES/lib-modules" ]; then
		if rmdir /lib/modules 2>/dev/null; then log "removed the empty /lib/modules"; fi
		rm -f "$HOST_CHANGES/lib-modules"
	fi
	rmdir "$HOST_CHANGES" 2>/dev/null || true
}

case "${1:-}" in
prepare) prepare_host ;;
routes) route_pods ;;
restore) restore_host ;;
*) die "usage: $0 prepare | routes | restore" ;;
esac
