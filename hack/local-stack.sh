#!/usr/bin/env bash
# The per-run half of the local stacks on a machine without Docker: what only a running cluster knows, written
# into an untracked copy of the stack file that pulumi reads with --config-file, so the tracked file never changes.
# Two targets, the same program:
#   local  stack `local` (`make up CLUSTER=local`) on the project's local cluster (hack/cluster.sh);
#   kind   stack `dev` (`make up CLUSTER=kind` when Docker does not answer) on kind's podman provider with the
#          project's node image (infra/kind.sh, hack/kind-node.sh).
# What differs from the committed stack file is what such a machine forces:
# - images: with a `pulumi-resource-docker` plugin on PATH (or in `pulumi plugin ls`), the program builds and
#   pushes the images through pulumi-docker into the cluster's registry localhost:5001, over podman's Docker API
#   (DOCKER_HOST; podman needs the classic builder, BuilderV1). Without it, podman builds and pushes them here and
#   the stack deploys the digests the registry reports (services.<name>.image), as CI-built images are.
# - Consul, one mode or the other, each with only its own keys in the stack file:
#   chart mode, with CONSUL_CHART_PATH (a local copy of the hashicorp/consul chart): the chart installs it in the
#     cluster, with its two images mirrored into localhost:5001 (`chart-images`), as an air-gapped user would;
#   agent mode, without it: a Consul agent on this host serves where the pods reach it (consulInstall=false):
#     the local node's address, or the host's address on kind's podman network.
# - on kind, the databases' volumes: the node image's StorageClass "shared" (postgresStorageClass), which every
#   node mounts from one host directory, so a database's pod moves to another node with its data.
#
#   hack/local-stack.sh prepare [TARGET]  start what the stack needs; print the generated stack file's path
#   hack/local-stack.sh chart-images  mirror the chart's images into localhost:5001 and print them (by digest, as
#                                     every image these scripts push) as
#                                     consulImage=… and consulK8sImage=… lines: the Consul server image built from
#                                     the toolchain's consul (`consul-image`), and the control-plane image
#                                     CONSUL_K8S_CONTROL_PLANE_IMAGE (a podman image) under the chart's own name
#   hack/local-stack.sh consul-image  build a Consul server image from the toolchain's consul, push it to
#                                     localhost:5001 and print its reference
#   hack/local-stack.sh postgres-image build a PostgreSQL image from Debian's package with the official image's
#                                     interface, push it to localhost:5001 and print its reference (for
#                                     postgresImage, when a service declares a database)
#   hack/local-stack.sh prometheus-image build a Prometheus image of the release infra/prometheus.py pins, from its
#                                     Go module (PROMETHEUS_VERSION), push it to localhost:5001 and print its
#                                     reference (for prometheusImage, when the stack file turns prometheusInstall on)
#   hack/local-stack.sh image SERVICE build and push one service's image with podman (as prepare does without the
#                                     plugin) and print its digest reference (make dev, after an edit)
#   hack/local-stack.sh stop [TARGET] stop the host's Consul agent (the cluster's own down removes the rest)
#   hack/local-stack.sh config-file [TARGET]  print the generated stack file's path
# TARGET is local (the default) or kind.
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK_DIR")
BIN=$("$HACK_DIR/toolchain.sh" bin-dir)
LOG_TAG=local-stack
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"

CONSUL_PORT=8500
CA_BUNDLE=${PIP_CA_BUNDLE_FILE:-/etc/ssl/certs/ca-certificates.crt}

# use_target local|kind: the stack, its state directory and how the pods reach this host.
use_target() {
	TARGET=$1
	case $TARGET in
	local)
		STATE=${CLUSTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/cluster}
		STACK_FILE=$REPO/Pulumi.local.yaml
		REGISTRY=localhost:5001
		;;
	kind)
		STATE=${KIND_STATE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/kind}
		STACK_FILE=$REPO/Pulumi.dev.yaml
		REGISTRY=localhost:${KIND_REGISTRY_PORT:-5001}
		;;
	*) die "unknown target '$TARGET' (local or kind)" ;;
	esac
	LOGS=$STATE/logs
	PIDS=$STATE/pids
	IMAGE_REPO=$REGISTRY/consul-microservices
	CONFIG_FILE=$STATE/$(basename "$STACK_FILE")
}
use_target local

# The address this host serves Consul on, where the pods reach it: the local node's address, or this host's
# address on kind's podman network (the gateway of the nodes, which masquerade their pods' traffic to it).
consul_bind_address() {
	case $TARGET in
	local) echo "${CLUSTER_NODE_IP:-10.254.0.1}" ;;
	kind) podman network inspect kind --format '{{range .Subnets}}{{.Gateway}}{{end}}' ;;
	esac
}

cluster_running() {
	case $TARGET in
	local) "$HACK_DIR/cluster.sh" status ;;
	kind) KIND_EXPERIMENTAL_PROVIDER=podman kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER:-consul-microservices}" ;;
	esac
}

has_docker_provider() {
	command -v pulumi-resource-docker >/dev/null ||
		"$BIN/pulumi" plugin ls --json 2>/dev/null | grep -q '"name": *"docker"'
}

# The CA bundle pip needs behind a TLS-intercepting proxy goes into the build context's git-ignored .offline/
# (services/README.md); on other machines the system bundle is harmless.
hand_in_ca_bundle() {
	[[ -f $CA_BUNDLE ]] || return 0
	mkdir -p "$REPO/services/.offline"
	cp "$CA_BUNDLE" "$REPO/services/.offline/ca.pem"
	echo "PIP_CA_BUNDLE=.offline/ca.pem"
}

# The services: the folders with a manifest (services/<name>/service.yaml, infra/catalog.py).
services() {
	local manifest
	for manifest in "$REPO"/services/*/service.yaml; do basename "$(dirname "$manifest")"; done
}

# push_pinned IMAGE: push NAME:TAG to the registry and print NAME@DIGEST, what the stack deploys: every image
# by digest, so the policy pack's images-pinned holds for the mirrored ones too.
push_pinned() {
	local image=$1 digest_file digest
	mkdir -p "$STATE"
	digest_file=$(mktemp "$STATE/digest.XXXXXX")
	# podman's own CLI reports the manifest digest it pushed (its Docker-compatible API does not).
	podman push --quiet --tls-verify=false --digestfile "$digest_file" "$image"
	digest=$(cat "$digest_file")
	rm -f "$digest_file"
	[[ $digest == sha256:* ]] || die "podman reported no digest for $image"
	echo "${image%:*}@$digest"
}

# registry_digest NAME:TAG: the manifest digest the registry serves for that tag, or nothing (and success: a
# missing tag is an answer, not an error, under set -e too).
registry_digest() {
	local registry=${1%%/*} path=${1#*/} headers
	headers=$(curl -sfI --max-time 5 -H "Accept: application/vnd.oci.image.manifest.v1+json" \
		-H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
		"http://$registry/v2/${path%:*}/manifests/${path##*:}") || return 0
	tr -d '\r' <<<"$headers" | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *\(sha256:[0-9a-f]*\)$/\1/p'
}

# build_once NAME KEY PODMAN-BUILD-ARGS...: build, push and print NAME@digest, unless the registry already
# serves NAME:KEY. KEY digests every input of the build, base image included, so a tag the registry has is
# this very build: a no-op `make up` asks the registry (milliseconds) instead of rebuilding each image
# (podman's cache hits took 7.5 s an image). Builds that differ in anything get different tags.
build_once() {
	local name=$1 key=$2 digest
	shift 2
	digest=$(registry_digest "$name:$key")
	if [[ -n $digest ]]; then
		log "$name:$key is in the registry: not built again"
		echo "$name@$digest"
		return
	fi
	log "podman build and push $name:$key"
	podman build --quiet "$@" --tag "$name:$key" >/dev/null
	push_pinned "$name:$key"
}

# base_image: the local base image every build here starts from (hack/container-engine.sh builds it once).
# Asked once per run: cmd_prepare calls it first, in its own shell, and later calls read the variable.
BASE_IMAGE_NAME=
base_image() {
	[[ -n $BASE_IMAGE_NAME ]] || BASE_IMAGE_NAME=$("$HACK_DIR/container-engine.sh" base-image)
	echo "$BASE_IMAGE_NAME"
}

# image_id IMAGE: the podman image's ID (a base image rebuilt under the same name gets a new one).
image_id() { podman image inspect --format '{{.Id}}' "$1"; }

# context_key DIR BASE-IMAGE: a digest of a generated build context's files and of its base image's ID.
context_key() {
	{
		(cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
		image_id "$2"
	} | sha256sum | cut -c1-12
}

# push_with_podman SERVICE BUILD-ARGS...: build and push the service's image unless its build is in the
# registry; print the digest reference. Keyed by the program's own digest of the service's build context
# and args (infra/build_context.py) and the base image's ID.
push_with_podman() {
	local service=$1 arg key base_id=none
	shift
	local -a flags=(--build-arg "SERVICE=$service")
	for arg in "$@"; do
		flags+=(--build-arg "$arg")
		[[ $arg != BASE_IMAGE=* ]] || base_id=$(image_id "${arg#BASE_IMAGE=}")
	done
	key=$("$REPO/.venv/bin/python" "$REPO/infra/build_context.py" "$service" "$@" "BASE_ID=$base_id")
	build_once "$IMAGE_REPO/$service" "$key" "${flags[@]}" -f "$REPO/services/$service/Dockerfile" "$REPO/services"
}

start_consul() {
	local address=$1
	pid_of consul >/dev/null && return 0
	mkdir -p "$STATE/consul" "$LOGS" "$PIDS"
	start_daemon consul "$BIN/consul" agent -dev -bind "$address" -client "$address" -http-port "$CONSUL_PORT" \
		-grpc-port -1 -dns-port -1 -data-dir "$STATE/consul" -log-level warn
	wait_until 60 "Consul at $address:$CONSUL_PORT" curl -sf "http://$address:$CONSUL_PORT/v1/status/leader"
}

# The chart runs the server as `/bin/sh -ec "... exec /usr/local/bin/docker-entrypoint.sh consul agent ..."`,
# as uid 100 with fsGroup 1000, and probes readiness with curl; the official image's entrypoint only drops
# privileges, which a non-root pod never needs, so this one just runs its arguments.
cmd_consul_image() {
	local version base context name
	version=$(sed -n 's/^CONSUL_VERSION=v//p' "$HACK_DIR/versions.env")
	name=$REGISTRY/hashicorp/consul:$version
	base=$(base_image)
	context=$(mktemp -d)
	cp "$BIN/consul" "$context/consul"
	printf '#!/bin/sh\nexec "$@"\n' >"$context/docker-entrypoint.sh"
	cat >"$context/Containerfile" <<EOF
FROM $base
COPY consul /bin/consul
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# curl: the chart's readiness probe asks the agent for its leader with it.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends curl >/dev/null \\
    && rm -rf /var/lib/apt/lists/* \\
    && chmod 0755 /bin/consul /usr/local/bin/docker-entrypoint.sh && mkdir -p /consul/data /consul/config \\
    && chown -R 100:1000 /consul
ENV CHECKPOINT_DISABLE=1
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["consul", "agent", "-dev", "-client", "0.0.0.0"]
EOF
	name=$(build_once "${name%:*}" "${name##*:}-$(context_key "$context" "$base")" "$context")
	rm -rf "$context"
	log "image $name"
	echo "$name"
}

# The official postgres image cannot be pulled here. This one has its interface, as far as the program uses it
# (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD, PGDATA; uid 999; stopped with SIGINT, a fast shutdown),
# built from Debian's postgresql package: the first start initialises PGDATA, later ones start on it.
cmd_postgres_image() {
	local base context name=$REGISTRY/consul-microservices/postgres:15-bookworm
	base=$(base_image)
	context=$(mktemp -d)
	cat >"$context/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -eu
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	mkdir -p "$PGDATA" && chmod 0700 "$PGDATA"
	password=$(mktemp)
	printf '%s' "$POSTGRES_PASSWORD" >"$password"
	initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$password" -A scram-sha-256 --encoding=UTF8 \
		--locale=C.UTF-8 >/dev/null
	rm -f "$password"
	printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses= -k /var/run/postgresql" -w start >/dev/null
	[ "$POSTGRES_DB" = postgres ] ||
		PGPASSWORD=$POSTGRES_PASSWORD createdb -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "initialised $PGDATA: database $POSTGRES_DB of $POSTGRES_USER"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql
ENTRYPOINT
	cat >"$context/Containerfile" <<CONTAINERFILE
FROM $base
# The postgres user first, as uid 999; no cluster of Debian's own (create_main_cluster): the pod makes its own.
RUN groupadd -g 999 postgres && useradd -u 999 -g 999 -d /var/lib/postgresql -s /bin/sh postgres \\
    && mkdir -p /etc/postgresql-common \\
    && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \\
    && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
        -o Dpkg::Options::=--force-confold postgresql-15 >/dev/null \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /var/run/postgresql /var/lib/postgresql/data \\
    && chown -R 999:999 /var/run/postgresql /var/lib/postgresql
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data
USER 999:999
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CONTAINERFILE
	chmod 0755 "$context/docker-entrypoint.sh"
	name=$(build_once "${name%:*}" "${name##*:}-$(context_key "$context" "$base")" "$context")
	rm -rf "$context"
	log "image $name"
	echo "$name"
}

# prometheus_release: the release PROMETHEUS_VERSION is (module v0.3XX.Y is release v3.XX.Y), e.g. 3.5.0.
prometheus_release() {
	local version
	version=$(sed -n 's/^PROMETHEUS_VERSION=//p' "$HACK_DIR/versions.env")
	[[ $version =~ ^v0\.3([0-9][0-9])\.([0-9]+)$ ]] || die "PROMETHEUS_VERSION '$version' is not v0.3XX.Y"
	echo "3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]} $version"
}

# prometheus_binary RELEASE MODULE-VERSION: the server built from its Go module, once, into a cache of its own
# (apart from the toolchain, whose hash a new pin would change); prints its path. No web UI: the release's
# assets are built by npm and are not in the module; the HTTP API (queries, targets) is all there.
prometheus_binary() {
	local release=$1 version=$2 dir src
	dir=${PROMETHEUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/prometheus}/$version
	if [[ ! -x $dir/prometheus ]]; then
		mkdir -p "$dir"
		log "go build Prometheus $release from github.com/prometheus/prometheus@$version, once (a few minutes; log: $dir/build.log)"
		src=$(mktemp -d "$dir/src.XXXXXX")
		(
			export GOFLAGS=-modcacherw GOWORK=off CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}
			module=$(go mod download -json "github.com/prometheus/prometheus@$version" |
				python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
			cp -r "$module/." "$src" && chmod -R u+w "$src" && cd "$src"
			go build -trimpath -o "$dir/prometheus.tmp" \
				-ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" ./cmd/prometheus
		) >"$dir/build.log" 2>&1 || die "the Prometheus build failed: $dir/build.log"
		rm -rf "$src"
		mv "$dir/prometheus.tmp" "$dir/prometheus"
	fi
	echo "$dir/prometheus"
}

# The official Prometheus image cannot be pulled here. This one runs the same release with the official image's
# interface, as far as the program uses it: /bin/prometheus as the entrypoint, uid 65534 (nobody), /prometheus.
# Keyed by the release and the base image, never by hashing the 100 MB binary on every `make up`.
cmd_prometheus_image() {
	local pins release version base context key name
	pins=$(prometheus_release)
	read -r release version <<<"$pins"
	name=$REGISTRY/prom/prometheus:v$release
	base=$(base_image)
	context=$(mktemp -d)
	cat >"$context/Containerfile" <<CONTAINERFILE
FROM $base
LABEL org.opencontainers.image.version="$release" org.opencontainers.image.source="github.com/prometheus/prometheus@$version"
COPY prometheus /bin/prometheus
RUN mkdir -p /prometheus /etc/prometheus && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
CONTAINERFILE
	key=$(context_key "$context" "$base")
	if [[ -z $(registry_digest "$name-$key") ]]; then
		cp "$(prometheus_binary "$release" "$version")" "$context/prometheus"
	fi
	name=$(build_once "${name%:*}" "${name##*:}-$key" "$context")
	rm -rf "$context"
	log "image $name"
	echo "$name"
}

# Whether the stack file turns the program's Prometheus on (the local stacks do).
wants_prometheus() { grep -q '^  consul-microservices:prometheusInstall: *true' "$STACK_FILE"; }

# Whether a service declares a database in its manifest (`database: postgres`).
declares_database() { grep -q '^database:' "$REPO"/services/*/service.yaml; }

# chart_image KEY: an image the chart's values.yaml names under global (image, imageK8S), e.g.
# hashicorp/consul-k8s-control-plane:1.9.3.
chart_image() {
	sed -n "s/^  $1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *\$/\1/p" "$CONSUL_CHART_PATH/values.yaml" | head -1
}

cmd_chart_images() {
	[[ -f ${CONSUL_CHART_PATH:-}/values.yaml ]] || die "CONSUL_CHART_PATH: no Consul chart at '${CONSUL_CHART_PATH:-}'"
	local source=${CONSUL_K8S_CONTROL_PLANE_IMAGE:-} name
	name=$(chart_image imageK8S)
	[[ -n $name ]] || die "$CONSUL_CHART_PATH/values.yaml names no global.imageK8S"
	[[ -n $source ]] && podman image exists "$source" ||
		die "CONSUL_K8S_CONTROL_PLANE_IMAGE: no podman image '$source' (a user pulls it: podman pull docker.io/$name)"
	log "mirror $source as $REGISTRY/$name"
	podman tag "$source" "$REGISTRY/$name"
	name=$(push_pinned "$REGISTRY/$name")
	echo "consulImage=$(cmd_consul_image)"
	echo "consulK8sImage=$name"
}

# consul_config: the keys of this run's Consul mode, into `config`.
consul_config() {
	local line key value
	if [[ -n ${CONSUL_CHART_PATH:-} ]]; then
		config+=([consulInstall]=true [consulChartPath]=$CONSUL_CHART_PATH)
		line=$(cmd_chart_images)
		while IFS='=' read -r key value; do config[$key]=$value; done <<<"$line"
	else
		local address
		address=$(consul_bind_address)
		start_consul "$address"
		config+=([consulInstall]=false [consulAddress]=http://$address:$CONSUL_PORT [consulExternalCidr]=$address/32)
	fi
}

# write_config: the tracked stack file's salt and settings, less the keys this run sets, then this run's values.
write_config() {
	local key
	{
		sed -n '/^encryptionsalt:/p; /^config:/,$p' "$STACK_FILE" |
			grep -v -E "^  consul-microservices:($(IFS='|'; echo "${!config[*]}")):"
		for key in "${!config[@]}"; do printf '  consul-microservices:%s: %s\n' "$key" "${config[$key]}"; done
	} >"$CONFIG_FILE.tmp"
	mv "$CONFIG_FILE.tmp" "$CONFIG_FILE"
}

# cmd_image SERVICE: the service's image as the stack deploys it without the plugin: built and pushed by podman.
cmd_image() {
	local service=${1:?usage: $0 image SERVICE} ca_arg
	[[ -f $REPO/services/$service/service.yaml ]] || die "no service $service (services/$service/service.yaml)"
	ca_arg=$(hand_in_ca_bundle)
	push_with_podman "$service" "BASE_IMAGE=$(base_image)" ${ca_arg:+"$ca_arg"}
}

cmd_prepare() {
	cluster_running || die "the $TARGET cluster is not running: make up CLUSTER=$TARGET starts it"
	local base ca_arg
	local -A config=()
	mkdir -p "$STATE"
	base_image >/dev/null
	[[ $TARGET != local ]] || config[kubeconfig]=$STATE/kubeconfig
	if has_docker_provider; then
		base=$(base_image)
		ca_arg=$(hand_in_ca_bundle)
		log "pulumi-resource-docker found: the program builds and pushes the images"
		config+=([imageDelivery]=push [imageRegistry]=$IMAGE_REPO [dockerBuilder]=BuilderV1 [baseImage]=$base)
		[[ -z $ca_arg ]] || config[imageBuildArgs]="[\"$ca_arg\"]"
	else
		log "no pulumi-resource-docker plugin: podman builds and pushes the images"
		local service images=""
		for service in $(services); do
			images+="${images:+, }\"$service\": {\"image\": \"$(cmd_image "$service")\"}"
		done
		config[services]="{$images}"
	fi
	consul_config
	! declares_database || config[postgresImage]=$(cmd_postgres_image)
	! wants_prometheus || config[prometheusImage]=$(cmd_prometheus_image)
	# On kind the databases' volumes are the node image's "shared" class: a database outlives its node.
	[[ $TARGET != kind ]] || ! declares_database || config[postgresStorageClass]=shared
	write_config
	echo "$CONFIG_FILE"
}

# Sourced (the tests do), it only defines the functions.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0
case "${1:-}" in
prepare | stop | config-file) use_target "${2:-local}" ;;
esac
case "${1:-}" in
prepare) cmd_prepare ;;
chart-images) cmd_chart_images ;;
image) cmd_image "${2:-}" ;;
consul-image) cmd_consul_image ;;
postgres-image) cmd_postgres_image ;;
prometheus-image) cmd_prometheus_image ;;
stop) stop_daemon consul ;;
config-file) echo "$CONFIG_FILE" ;;
*) die "usage: $0 prepare | chart-images | consul-image | postgres-image | prometheus-image | stop | config-file" ;;
esac
