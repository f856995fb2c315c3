#!/usr/bin/env bash
# kind without Docker Hub: a kind node image and a registry image made from the toolchain (hack/toolchain.sh) and
# Debian's packages only, for `make up CLUSTER=kind` on a machine where Docker does not answer (kind's podman
# provider, infra/kind.sh). With Docker, kind pulls kindest/node and registry:2 instead and none of this runs.
#
#   hack/kind-node.sh build           build the node image when missing (cached by its inputs); print its name
#   hack/kind-node.sh name            print the node image's name (nothing is built)
#   hack/kind-node.sh registry-image  build the registry image when missing; print its name
#   hack/kind-node.sh kubeadm-patch   print the kubeadm ClusterConfiguration patch that names the node's images
#
# The node image is what kind expects of one (kind's node image contract): systemd as PID 1 behind an entrypoint,
# containerd, kubeadm, kubelet and kubectl at KUBERNETES_VERSION, /kind/version, and /kind/manifests/ with the
# default CNI (kube-router: routes between nodes and NetworkPolicy) and the default StorageClass
# (local-path-provisioner). The control plane's images are preloaded into the node's containerd under the node
# image's own repository, localhost/consul-microservices/kind/<name>:<the component's version>, never under
# registry.k8s.io names they were not published under; kubeadm finds them through `kubeadm-patch`, which
# infra/kind.sh adds to the cluster's config.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FILES=$HACK_DIR/kind-node
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"
BIN=$("$HACK_DIR/toolchain.sh" bin-dir)
CACHE=${KIND_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/kind-node}
LOG_TAG=kind-node
LOGS=$CACHE/logs
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"

DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${BASE_IMAGE_MIRROR:-http://deb.debian.org/debian}
IMAGE_REPO=localhost/consul-microservices/kind
# The node: systemd, Debian's containerd and runc, the CNI plugins the pod network uses (bridge, host-local,
# portmap), what kube-proxy, kube-router and the kubelet call (iptables, ipset, conntrack, socat for port-forward,
# ethtool, iproute2), and pgrep (procps), which kind runs.
NODE_PACKAGES=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,ipset,conntrack,socat
NODE_PACKAGES+=,ethtool,iproute2,ca-certificates,procps,kmod,mount,util-linux
# The base of the images that change the node's network (kube-proxy, kube-router) and of the storage helper pods.
TOOLS_PACKAGES=iptables,ipset,conntrack,iproute2,ca-certificates
# Units a node never needs: timers and consoles of a full Debian system.
MASKED_UNITS=(apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service
	getty@tty1.service console-getty.service systemd-logind.service)

# sha256_tag: the first 12 hex digits of the sha256 of stdin (macOS before 14 has only shasum).
sha256_tag() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-12; }

ETCD_TAG=$ETCD_VERSION
COREDNS_TAG=$COREDNS_VERSION
PAUSE_TAG=consul-microservices-$(cat "$HACK_DIR/pause/main.go" "$HACK_DIR/pause/go.mod" | sha256_tag)

# The node image's inputs: this script, its files, the pause source and the toolchain (its directory is named after
# the hash of its pins). A change of any gives a new tag; an unchanged tree reuses the image.
node_image() {
	local inputs
	inputs=$({
		cat "$0" "$FILES"/* "$HACK_DIR/pause/main.go"
		basename "$("$HACK_DIR/toolchain.sh" root-dir)"
	} | sha256_tag)
	echo "$IMAGE_REPO/node:$KUBERNETES_VERSION-$inputs"
}

registry_image() { echo "$IMAGE_REPO/registry:$DISTRIBUTION_VERSION"; }

need_toolchain() {
	local tool
	for tool in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd \
		coredns kube-router local-path-provisioner registry; do
		[[ -x $BIN/$tool ]] || die "$BIN/$tool not found: run \`make toolchain\`"
	done
}

# rootfs NAME PACKAGES: a Debian minbase tarball with PACKAGES (cached by the list); prints its path.
rootfs() {
	local name=$1 packages=$2 tarball dir
	tarball=$CACHE/$name-$DEBIAN_SUITE-$(echo "$packages" | sha256_tag).tar
	if [[ ! -f $tarball ]]; then
		dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
		log "debootstrap $name ($packages) from $DEBIAN_MIRROR (log: $LOGS/debootstrap-$name.log)"
		debootstrap --variant=minbase --include="$packages" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" \
			>"$LOGS/debootstrap-$name.log" 2>&1 || die "debootstrap failed (log: $LOGS/debootstrap-$name.log)"
		rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
		tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$dir"
	fi
	echo "$tarball"
}

# build_image NAME TAG FROM BINARY ENTRYPOINT-JSON: a one-binary image at $IMAGE_REPO/NAME:TAG, the binary in
# /usr/local/bin (on PATH: kubeadm's static pods name their command by name).
build_image() {
	local name=$1 tag=$2 from=$3 binary=$4 entrypoint=$5 context
	context=$(mktemp -d "$CACHE/context.XXXXXX")
	cp "$binary" "$context/"
	cat >"$context/Containerfile" <<-EOF
		FROM $from
		COPY $(basename "$binary") /usr/local/bin/
		ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin
		ENTRYPOINT $entrypoint
	EOF
	podman build --quiet --network none --tag "$IMAGE_REPO/$name:$tag" "$context" >/dev/null
	rm -rf "$context"
	echo "$IMAGE_REPO/$name:$tag"
}

# The images preloaded into the node's containerd, built with podman; prints their names.
component_images() {
	local tools=$IMAGE_REPO/node-tools:$DEBIAN_SUITE pause_bin=$CACHE/pause cmd
	podman import --quiet --change 'CMD ["/bin/sh"]' "$(rootfs node-tools "$TOOLS_PACKAGES")" "$tools" >/dev/null
	echo "$tools"
	for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
		build_image "$cmd" "$KUBERNETES_VERSION" scratch "$BIN/$cmd" "[\"/usr/local/bin/$cmd\"]"
	done
	build_image kube-proxy "$KUBERNETES_VERSION" "$tools" "$BIN/kube-proxy" '["/usr/local/bin/kube-proxy"]'
	build_image etcd "$ETCD_TAG" scratch "$BIN/etcd" '["/usr/local/bin/etcd"]'
	build_image coredns "$COREDNS_TAG" scratch "$BIN/coredns" '["/usr/local/bin/coredns"]'
	build_image kube-router "$KUBE_ROUTER_VERSION" "$tools" "$BIN/kube-router" '["/usr/local/bin/kube-router"]'
	build_image local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" scratch "$BIN/local-path-provisioner" \
		'["/usr/local/bin/local-path-provisioner"]'
	(cd "$HACK_DIR/pause" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$pause_bin" .)
	build_image pause "$PAUSE_TAG" scratch "$pause_bin" '["/usr/local/bin/pause"]'
}

# preload ROOT IMAGE...: the images into the containerd content store under ROOT/var/lib/containerd (namespace
# k8s.io, where the kubelet's CRI looks), by a containerd of this host's that serves only that root for the
# import. Not unpacked: the node's containerd unpacks an image the first time a container needs it.
preload() {
	local root=$1 state sock archive pid
	shift
	state=$(mktemp -d "$CACHE/containerd.XXXXXX")
	sock=$state/containerd.sock
	archive=$state/images.tar
	podman save --quiet --multi-image-archive --format docker-archive --output "$archive" "$@"
	cat >"$state/config.toml" <<-EOF
		version = 2
		root = "$root/var/lib/containerd"
		state = "$state/state"
		disabled_plugins = ["io.containerd.grpc.v1.cri"]
		[grpc]
		  address = "$sock"
		[ttrpc]
		  address = "$sock.ttrpc"
		[metrics]
		  address = ""
	EOF
	containerd --config "$state/config.toml" >"$LOGS/preload-containerd.log" 2>&1 &
	pid=$!
	wait_until 30 "containerd for the preload" ctr --address "$sock" version
	ctr --address "$sock" --namespace k8s.io images import --no-unpack "$archive" >/dev/null
	kill -TERM "$pid"
	wait "$pid" || true
	rm -rf "$state"
}

# The containerd of every node: the project's pause image, the CNI plugins where Debian installs them, no OOM score
# lowering (a host without CAP_SYS_RESOURCE refuses it), no AppArmor profile (kind's nodes are privileged
# containers; a host without AppArmor has none to load), registry mirrors read from certs.d (infra/kind.sh).
containerd_config() {
	cat <<-EOF
		# Written by hack/kind-node.sh.
		version = 2
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$IMAGE_REPO/pause:$PAUSE_TAG"
		  restrict_oom_score_adj = true
		  disable_apparmor = true
		  tolerate_missing_hugepages_controller = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = true
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "/etc/cni/net.d"
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    config_path = "/etc/containerd/certs.d"
	EOF
}

# manifest FILE: a file of hack/kind-node/ with the image repository and versions filled in.
manifest() {
	sed -e "s|@IMAGE_REPO@|$IMAGE_REPO|g" -e "s|@KUBE_ROUTER_VERSION@|$KUBE_ROUTER_VERSION|g" \
		-e "s|@LOCAL_PATH_PROVISIONER_VERSION@|$LOCAL_PATH_PROVISIONER_VERSION|g" "$FILES/$1"
}

cmd_kubeadm_patch() {
	cat <<-EOF
		kind: ClusterConfiguration
		imageRepository: $IMAGE_REPO
		etcd:
		  local:
		    imageTag: $ETCD_TAG
		dns:
		  imageTag: $COREDNS_TAG
	EOF
}

cmd_build() {
	local image root units unit
	image=$(node_image)
	if podman image exists "$image"; then
		log "node image $image present"
		echo "$image"
		return
	fi
	need_toolchain
	"$HACK_DIR/container-engine.sh" install
	install_packages debootstrap containerd
	mkdir -p "$CACHE" "$LOGS"
	local -a images
	mapfile -t images < <(component_images)
	root=$(mktemp -d "$CACHE/node.XXXXXX")
	log "assemble $image in $root"
	tar -C "$root" -xf "$(rootfs node "$NODE_PACKAGES")"
	install -m 0755 "$BIN/kubeadm" "$BIN/kubelet" "$BIN/kubectl" "$root/usr/bin/"
	install -m 0755 "$FILES/entrypoint" "$root/usr/local/bin/entrypoint"
	mkdir -p "$root/kind/manifests" "$root/etc/systemd/system/kubelet.service.d" "$root/etc/containerd"
	echo "$KUBERNETES_VERSION" >"$root/kind/version"
	manifest default-cni.yaml >"$root/kind/manifests/default-cni.yaml"
	manifest default-storage.yaml >"$root/kind/manifests/default-storage.yaml"
	containerd_config >"$root/etc/containerd/config.toml"
	install -m 0644 "$FILES/containerd.service" "$FILES/kubelet.service" "$FILES/node-firewall.service" \
		"$root/etc/systemd/system/"
	install -m 0644 "$FILES/10-kubeadm.conf" "$FILES/20-kind-node.conf" "$root/etc/systemd/system/kubelet.service.d/"
	units=""
	for unit in "${MASKED_UNITS[@]}"; do units+=" $unit"; done
	# shellcheck disable=SC2086 # one word per unit
	chroot "$root" systemctl mask $units >/dev/null 2>&1
	chroot "$root" systemctl enable containerd.service kubelet.service node-firewall.service >/dev/null 2>&1
	log "preload ${#images[@]} images into the node's containerd"
	preload "$root" "${images[@]}"
	log "podman import $image"
	tar -C "$root" -c . | podman import --quiet \
		--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
		--change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
	rm -rf "$root"
	prune_node_images "$image"
	echo "$image"
}

# prune_node_images KEEP: the node images of earlier inputs, about 1.2 GB each; one a cluster still runs on
# stays (podman refuses to remove it).
prune_node_images() {
	local old
	for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$IMAGE_REPO/node"); do
		[ "$old" = "$1" ] || podman rmi "$old" >/dev/null 2>&1 || true
	done
}

cmd_registry_image() {
	local image context
	image=$(registry_image)
	if podman image exists "$image"; then
		echo "$image"
		return
	fi
	[[ -x $BIN/registry ]] || die "$BIN/registry not found: run \`make toolchain\`"
	mkdir -p "$CACHE"
	context=$(mktemp -d "$CACHE/context.XXXXXX")
	cp "$BIN/registry" "$context/"
	# The registry:2 image's interface: listens on :5000, keeps its data in /var/lib/registry.
	cat >"$context/config.yml" <<-EOF
		version: 0.1
		log: {level: info, formatter: text}
		storage:
		  filesystem: {rootdirectory: /var/lib/registry}
		  delete: {enabled: true}
		http:
		  addr: :5000
	EOF
	# OTEL_TRACES_EXPORTER=none: distribution v3 otherwise exports traces to localhost:4318.
	cat >"$context/Containerfile" <<-EOF
		FROM scratch
		COPY registry /bin/registry
		COPY config.yml /etc/distribution/config.yml
		ENV OTEL_TRACES_EXPORTER=none
		VOLUME /var/lib/registry
		EXPOSE 5000
		ENTRYPOINT ["/bin/registry", "serve", "/etc/distribution/config.yml"]
	EOF
	podman build --quiet --network none --tag "$image" "$context" >/dev/null
	rm -rf "$context"
	log "built $image"
	echo "$image"
}

case "${1:-}" in
build) cmd_build ;;
name) node_image ;;
registry-image) cmd_registry_image ;;
kubeadm-patch) cmd_kubeadm_patch ;;
*) die "usage: $0 build | name | registry-image | kubeadm-patch" ;;
esac
