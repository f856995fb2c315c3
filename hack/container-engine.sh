#!/usr/bin/env bash
# A Docker-compatible container engine without Docker: Debian's podman, its API served on a unix socket (for
# pulumi-docker or any Docker client through DOCKER_HOST), and a local Python base image made with debootstrap +
# `podman import`, for builds on machines that cannot pull images. Runs as root; runc is the runtime (crun fails
# here).
#
#   hack/container-engine.sh install      apt-get install podman, runc, debootstrap; write containers.conf
#   hack/container-engine.sh start        install, then serve the API on the socket (no-op when already serving)
#   hack/container-engine.sh stop         stop the API service
#   hack/container-engine.sh base-image   build (once; cached) and print the local Python base image
#   hack/container-engine.sh up           start + base-image
#   hack/container-engine.sh base-image-name  print the base image's name (nothing is built)
#   hack/container-engine.sh docker-host  print the DOCKER_HOST value
#   hack/container-engine.sh status       exit 0 when the API answers
set -euo pipefail

STATE=${CONTAINER_ENGINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/container-engine}
SOCKET=${CONTAINER_ENGINE_SOCKET:-/run/consul-microservices/podman.sock}
# podman reads CONTAINERS_CONF too, so moving it moves podman's configuration with it.
CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}
REGISTRIES_CONF=${REGISTRIES_CONF:-/etc/containers/registries.conf.d/50-consul-microservices.conf}
DEBIAN_SUITE=${BASE_IMAGE_SUITE:-bookworm}
DEBIAN_MIRROR=${BASE_IMAGE_MIRROR:-http://deb.debian.org/debian}
# bookworm's python3 is 3.11, the project's Python version.
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-localhost/consul-microservices/python:3.11-$DEBIAN_SUITE}
BASE_PACKAGES=python3,python3-pip,python3-venv,ca-certificates,tzdata
PIDFILE=$STATE/podman-service.pid

LOG_TAG=container-engine
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd_docker_host() { echo "unix://$SOCKET"; }

cmd_status() { curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }

cmd_install() {
	[[ $(id -u) == 0 ]] || die "needs root (apt-get, /etc/containers, rootful podman)"
	install_packages podman runc debootstrap curl
	# No ulimit defaults (this machine's limits reject podman's) and runc as the runtime for every podman call,
	# including the ones the API service makes for Docker clients.
	if ! grep -qs 'consul-microservices' "$CONTAINERS_CONF"; then
		[[ ! -s $CONTAINERS_CONF ]] || cp "$CONTAINERS_CONF" "$CONTAINERS_CONF.orig"
		mkdir -p "$(dirname "$CONTAINERS_CONF")"
		cat >"$CONTAINERS_CONF" <<'EOF'
# Written by consul-microservices hack/container-engine.sh (a previous file is kept as containers.conf.orig).
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
		log "wrote $CONTAINERS_CONF"
	fi
	# The local cluster's registry (kind's localhost:5001 shape) speaks plain HTTP. Docker treats registries on
	# localhost as insecure by itself; podman, including its Docker API that pulumi-docker pushes through, must
	# be told.
	if [[ ! -f $REGISTRIES_CONF ]]; then
		mkdir -p "$(dirname "$REGISTRIES_CONF")"
		cat >"$REGISTRIES_CONF" <<'EOF'
# Written by consul-microservices hack/container-engine.sh: the local registry is plain HTTP, as kind's.
[[registry]]
location = "localhost:5001"
insecure = true
EOF
		log "wrote $REGISTRIES_CONF"
	fi
}

cmd_start() {
	cmd_install
	if cmd_status; then
		log "API already serving on $(cmd_docker_host)"
		return
	fi
	mkdir -p "$STATE" "$(dirname "$SOCKET")"
	rm -f "$SOCKET"
	log "start podman system service on $(cmd_docker_host) (log: $STATE/podman-service.log)"
	setsid podman --runtime runc system service --time 0 "unix://$SOCKET" \
		>"$STATE/podman-service.log" 2>&1 </dev/null &
	echo $! >"$PIDFILE"
	for _ in $(seq 100); do
		cmd_status && break
		sleep 0.2
	done
	cmd_status || die "podman API did not answer on $SOCKET (log: $STATE/podman-service.log)"
	log "API ready: export DOCKER_HOST=$(cmd_docker_host)"
}

cmd_stop() {
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null) || {
		log "not running"
		return
	}
	if [[ -d /proc/$pid ]] && grep -q podman "/proc/$pid/cmdline"; then
		log "stop podman system service (pid $pid)"
		kill -TERM "$pid"
		# Its command line empties when it exits, before a late-reaping init removes it (lib.sh's stop_daemon).
		for _ in $(seq 100); do
			grep -q podman "/proc/$pid/cmdline" 2>/dev/null || break
			sleep 0.1
		done
		! grep -q podman "/proc/$pid/cmdline" 2>/dev/null || kill -KILL "$pid"
	fi
	rm -f "$PIDFILE" "$SOCKET"
}

# The rootfs tarball is cached; the image is imported from it when podman does not have it.
cmd_base_image() {
	cmd_install
	local tarball=$STATE/python-$DEBIAN_SUITE-rootfs.tar rootfs
	if podman image exists "$LOCAL_BASE_IMAGE"; then
		log "base image $LOCAL_BASE_IMAGE present"
		echo "$LOCAL_BASE_IMAGE"
		return
	fi
	if [[ ! -f $tarball ]]; then
		mkdir -p "$STATE"
		rootfs=$(mktemp -d "$STATE/rootfs.XXXXXX")
		log "debootstrap $DEBIAN_SUITE ($BASE_PACKAGES) from $DEBIAN_MIRROR (log: $STATE/debootstrap.log)"
		debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
			>"$STATE/debootstrap.log" 2>&1 || die "debootstrap failed (log: $STATE/debootstrap.log)"
		# Behave like the official python images: `python`/`pip` exist and pip may install system-wide
		# (Debian's EXTERNALLY-MANAGED marker would refuse it). No apt lists or caches in the image.
		ln -sf python3 "$rootfs/usr/bin/python"
		ln -sf pip3 "$rootfs/usr/bin/pip"
		rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
		rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
		tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$rootfs"
	fi
	log "podman import $tarball as $LOCAL_BASE_IMAGE"
	podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$LOCAL_BASE_IMAGE" >/dev/null
	echo "$LOCAL_BASE_IMAGE"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
base-image) cmd_base_image ;;
up)
	cmd_start
	cmd_base_image >/dev/null
	log "base image: $LOCAL_BASE_IMAGE (use: --build-arg BASE_IMAGE=$LOCAL_BASE_IMAGE)"
	;;
base-image-name) echo "$LOCAL_BASE_IMAGE" ;;
docker-host) cmd_docker_host ;;
status) cmd_status ;;
*) die "usage: $0 install | start | stop | base-image | base-image-name | up | docker-host | status" ;;
esac
