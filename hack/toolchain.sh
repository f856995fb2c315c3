#!/usr/bin/env bash
# Builds the pinned toolchain (hack/versions.env) from the Go module proxy only -- no release downloads --
# into a cache outside the repo, named after the hash of versions.env.
#
#   hack/toolchain.sh build [component...]   build what is missing (all components by default)
#   hack/toolchain.sh bin-dir                 print the bin directory (computed, nothing is built)
#   hack/toolchain.sh root-dir                print the cache directory of this toolchain
#   hack/toolchain.sh manifest                print the manifest of what was built
#   hack/toolchain.sh components              list the components
#
# Most modules carry local-path `replace`s (e.g. `sdk/v3 => ../sdk`) whose targets are not in the module zip, so
# `go install mod@ver` fails. Each component is therefore rebuilt as a source tree: the module is copied out of
# GOMODCACHE, every local replace target is unpacked from the proxy at the version the go.mod requires, and
# `go build` runs inside it with the project's own go.mod/go.sum unchanged.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSIONS_FILE=$HACK_DIR/versions.env
# shellcheck source=versions.env
source "$VERSIONS_FILE"

CACHE_BASE=${TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/toolchain}
# sha256 of stdin as "<hex>  -": macOS before 14 has no sha256sum, only Perl's shasum.
sha256_stdin() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi; }
# Named after the toolchain's pins only: the project-local tools' section of versions.env (and the blank line
# before its marker, dropped by the second sed: BSD head has no `head -n -1`) does not count.
ROOT=$CACHE_BASE/$(sed '/^# ---- Project-local tools/,$d' "$VERSIONS_FILE" | sed '$d' | sha256_stdin | cut -c1-16)
BIN=$ROOT/bin
WORK=$ROOT/work
LOGS=$ROOT/logs
RECORDS=$ROOT/records

COMPONENTS=(consul etcd kubernetes kwok coredns registry kube_router local_path_provisioner pulumi pulumi_python
	pulumi_kubernetes)

export GOFLAGS=-modcacherw GOWORK=off CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}

CURRENT_LOG=/dev/null
MODLIST=/dev/null

# step MSG: progress on the terminal (fd 3) and in the current component's log.
step() { printf '[toolchain %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$CURRENT_LOG" >&3; }
die() {
	printf 'toolchain: %s\n' "$*" >&2
	exit 1
}

# mod_dir MOD VER: download one module through the proxy and print its directory in GOMODCACHE.
mod_dir() {
	local out
	if ! out=$(go mod download -json "$1@$2" 2>&1); then
		die "go mod download $1@$2 failed: $out"
	fi
	python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])' <<<"$out"
}

# unpack MOD VER DEST: writable copy of a module (the cache is read-only and zips drop exec bits).
unpack() {
	local src
	src=$(mod_dir "$1" "$2")
	rm -rf "$3"
	mkdir -p "$3"
	cp -r "$src/." "$3"
	chmod -R u+w "$3"
	printf '%s %s\n' "$1" "$2" >>"$MODLIST"
}

# local_replaces DIR: "module required-version path" for each local-path replace of DIR/go.mod.
local_replaces() {
	go mod edit -json "$1/go.mod" | python3 -c '
import json, sys
m = json.load(sys.stdin)
req = {r["Path"]: r["Version"] for r in m.get("Require") or []}
for r in m.get("Replace") or []:
    new = r["New"]
    old = r["Old"]["Path"]
    # Replacements of modules that are not required (such as the FORBIDDEN_DEPENDENCY guards of etcd) need no tree.
    if "Version" not in new and new["Path"].startswith(".") and old in req:
        print(old, req[old], new["Path"])
'
}

# fill_replaces DIR [MAPFN]: unpack each missing local replace target at the version DIR/go.mod requires;
# MAPFN MOD VER may print another version (k8s staging modules are required at v0.0.0).
fill_replaces() {
	local dir=$1 map=${2:-} mod ver path
	while read -r mod ver path; do
		[[ -f $dir/$path/go.mod ]] && continue
		if [[ -n $map ]]; then ver=$("$map" "$mod" "$ver"); fi
		step "  replace $mod => $path at $ver"
		unpack "$mod" "$ver" "$dir/$path"
	done < <(local_replaces "$dir")
}

# gobuild DIR OUT PKG [go build args...]: build one binary into the bin dir.
gobuild() {
	local dir=$1 out=$2 pkg=$3
	shift 3
	step "  go build $pkg -> bin/$out"
	(cd "$dir" && go build -trimpath -o "$BIN/$out" "$@" "$pkg")
}

# source_tree PATH MOD VER [MAPFN]: fresh work tree $WORK/PATH of MOD@VER with its local replaces filled (PATH
# starts with the component's name, so the tree goes once the component is built); prints the tree's path.
source_tree() {
	local tree=$WORK/$1
	step "  fetch $2@$3"
	unpack "$2" "$3" "$tree"
	fill_replaces "$tree" "${4:-}"
	printf '%s\n' "$tree"
}

# ---- components: build_<name> builds, bins_<name> lists the binaries it produces, pin_<name> its version ----

consul_submodule_version() {
	if [[ $1 == github.com/hashicorp/consul/api ]]; then echo "$CONSUL_API_VERSION"; else echo "$2"; fi
}

pin_consul() { echo "$CONSUL_VERSION (api $CONSUL_API_VERSION)"; }
bins_consul() { echo consul; }
build_consul() {
	local tree
	tree=$(source_tree consul github.com/hashicorp/consul "$CONSUL_VERSION" consul_submodule_version)
	gobuild "$tree" consul . -ldflags "-s -w -X github.com/hashicorp/consul/version.GitCommit=$CONSUL_VERSION"
}

pin_etcd() { echo "$ETCD_VERSION"; }
bins_etcd() { echo etcd; }
build_etcd() {
	local tree
	tree=$(source_tree etcd/server go.etcd.io/etcd/server/v3 "$ETCD_VERSION")
	gobuild "$tree" etcd . -ldflags "-s -w"
}

# k8s.io/kubernetes requires its staging modules at v0.0.0; they are published as v0.<minor>.<patch>.
k8s_staging_version() {
	if [[ $1 == k8s.io/* && $2 == v0.0.0 ]]; then echo "v0.${KUBERNETES_VERSION#v1.}"; else echo "$2"; fi
}

pin_kubernetes() { echo "$KUBERNETES_VERSION"; }
bins_kubernetes() { echo kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kubeadm; }
build_kubernetes() {
	local tree minor cmd ldflags="-s -w" pkg
	tree=$(source_tree kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION" k8s_staging_version)
	# The zip's vendor/ lacks the staging symlinks and would force -mod=vendor; build from the module cache instead.
	rm -rf "$tree/vendor"
	minor=${KUBERNETES_VERSION#v1.}
	minor=${minor%%.*}
	# Without these the server reports v0.0.0, and clients (pulumi-kubernetes, kwokctl) pick wrong behaviour.
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	done
	for cmd in $(bins_kubernetes); do
		# -mod=mod: the published staging go.mods require v0.X.Y where kubernetes' go.mod says v0.0.0.
		gobuild "$tree" "$cmd" "./cmd/$cmd" -mod=mod -tags selinux,notest -ldflags "$ldflags"
	done
}

pin_kwok() { echo "$KWOK_VERSION"; }
bins_kwok() { echo kwok; }
build_kwok() {
	local tree f stage=kustomize/stage
	tree=$(source_tree kwok sigs.k8s.io/kwok "$KWOK_VERSION")
	gobuild "$tree" kwok ./cmd/kwok -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
	# Standalone kwok needs its Stage objects in a config file (kwokctl embeds them): fast node init,
	# heartbeat via leases, fast pod ready/complete/delete.
	step "  write share/kwok-stages.yaml"
	mkdir -p "$ROOT/share"
	for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
		pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
		printf -- '---\n'
		cat "$tree/$stage/$f.yaml"
	done >"$ROOT/share/kwok-stages.yaml"
}

# The real node's cluster DNS, local registry and NetworkPolicy engine (hack/node.sh).
pin_coredns() { echo "$COREDNS_VERSION"; }
bins_coredns() { echo coredns; }
build_coredns() {
	local tree
	tree=$(source_tree coredns github.com/coredns/coredns "$COREDNS_VERSION")
	gobuild "$tree" coredns . -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}

pin_registry() { echo "$DISTRIBUTION_VERSION"; }
bins_registry() { echo registry; }
build_registry() {
	local tree
	tree=$(source_tree registry github.com/distribution/distribution/v3 "$DISTRIBUTION_VERSION")
	gobuild "$tree" registry ./cmd/registry -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION"
}

pin_kube_router() { echo "$KUBE_ROUTER_VERSION"; }
bins_kube_router() { echo kube-router; }
build_kube_router() {
	local tree
	tree=$(source_tree kube_router github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION")
	gobuild "$tree" kube-router ./cmd/kube-router -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
}

# The kind node image's default StorageClass (hack/kind-node.sh).
pin_local_path_provisioner() { echo "$LOCAL_PATH_PROVISIONER_VERSION"; }
bins_local_path_provisioner() { echo local-path-provisioner; }
build_local_path_provisioner() {
	local tree
	tree=$(source_tree local_path_provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION")
	# The module zip keeps only vendor/modules.txt, which would force -mod=vendor: build from the module cache.
	rm -rf "$tree/vendor"
	gobuild "$tree" local-path-provisioner . -mod=mod -ldflags "-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
}

PULUMI_VERSION_PKG=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version

pin_pulumi() { echo "$PULUMI_VERSION"; }
bins_pulumi() { echo pulumi; }
build_pulumi() {
	local tree
	# pkg/v3 replaces sdk/v3 => ../sdk, so the tree is pulumi/{pkg,sdk} as in the repository.
	tree=$(source_tree pulumi/pkg github.com/pulumi/pulumi/pkg/v3 "$PULUMI_VERSION")
	gobuild "$tree" pulumi ./cmd/pulumi -ldflags "-s -w -X $PULUMI_VERSION_PKG=$PULUMI_VERSION"
}

pin_pulumi_python() { echo "$PULUMI_LANGUAGE_PYTHON_SDK_VERSION+exec-$PULUMI_VERSION"; }
bins_pulumi_python() { echo pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python; }
build_pulumi_python() {
	local host sdk f
	host=$(source_tree pulumi_python github.com/pulumi/pulumi/sdk/v3 "$PULUMI_LANGUAGE_PYTHON_SDK_VERSION")
	gobuild "$host" pulumi-language-python ./python/cmd/pulumi-language-python \
		-ldflags "-s -w -X $PULUMI_VERSION_PKG=$PULUMI_LANGUAGE_PYTHON_SDK_VERSION"
	# The executor shim and the python plugin shim belong to the SDK the program imports.
	sdk=$(mod_dir github.com/pulumi/pulumi/sdk/v3 "$PULUMI_VERSION")
	printf '%s %s\n' github.com/pulumi/pulumi/sdk/v3 "$PULUMI_VERSION" >>"$MODLIST"
	for f in cmd/pulumi-language-python-exec dist/pulumi-resource-pulumi-python; do
		step "  install python/$f from sdk/v3@$PULUMI_VERSION"
		install -m 0755 "$sdk/python/$f" "$BIN/"
	done
}

pin_pulumi_kubernetes() { echo "$PULUMI_KUBERNETES_VERSION ($PULUMI_KUBERNETES_MODULE_VERSION)"; }
bins_pulumi_kubernetes() { echo pulumi-resource-kubernetes; }
build_pulumi_kubernetes() {
	local tree cmd=./cmd/pulumi-resource-kubernetes
	tree=$(source_tree pulumi_kubernetes/provider github.com/pulumi/pulumi-kubernetes/provider/v4 \
		"$PULUMI_KUBERNETES_MODULE_VERSION")
	# main.go embeds schema-embed.json and terraform-mapping-embed.json, generated from the committed schema.json.
	step "  go generate $cmd (embedded schema)"
	(cd "$tree/$cmd" && VERSION=$PULUMI_KUBERNETES_VERSION go generate .)
	gobuild "$tree" pulumi-resource-kubernetes "$cmd" \
		-ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION"
}

# ---- driver ----

# up_to_date NAME: the record matches the pin and every binary is present.
up_to_date() {
	local rec=$RECORDS/$1.json b
	[[ -f $rec ]] || return 1
	python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["pin"] != sys.argv[2])' "$rec" "$("pin_$1")" ||
		return 1
	for b in $("bins_$1"); do [[ -x $BIN/$b ]] || return 1; done
}

# record NAME SECONDS: what was built (pin, modules, sha256 of binaries, time) for the manifest.
record() {
	local name=$1 secs=$2
	# One argument per binary name; no array, whose "${a[@]}" fails under set -u when empty (bash < 4.4).
	# shellcheck disable=SC2046
	python3 - "$RECORDS/$name.json" "$name" "$("pin_$name")" "$secs" "$MODLIST" "$BIN" $("bins_$name") <<'EOF'
import datetime, hashlib, json, os, sys
out, name, pin, secs, modlist, bindir, *names = sys.argv[1:]
bins = [os.path.join(bindir, b) for b in names]
with open(modlist) as f:
    modules = [dict(zip(("module", "version"), line.split())) for line in f if line.strip()]
json.dump({
    "component": name,
    "pin": pin,
    "build_seconds": int(secs),
    "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "modules": modules,
    "binaries": {
        os.path.basename(b): {"sha256": hashlib.sha256(open(b, "rb").read()).hexdigest(), "bytes": os.path.getsize(b)}
        for b in bins
    },
}, open(out, "w"), indent=2)
EOF
}

write_manifest() {
	python3 - "$ROOT/manifest.json" "$VERSIONS_FILE" "$RECORDS" "$(go env GOVERSION)" <<'EOF'
import json, os, sys
out, versions_file, records, goversion = sys.argv[1:]
pins = dict(
    line.strip().split("=", 1) for line in open(versions_file) if "=" in line and not line.lstrip().startswith("#")
)
components = {
    f[:-5]: json.load(open(os.path.join(records, f))) for f in sorted(os.listdir(records)) if f.endswith(".json")
}
json.dump({"versions": pins, "go": goversion, "components": components}, open(out, "w"), indent=2)
EOF
}

build_one() {
	local name=$1 start
	if up_to_date "$name"; then
		step "$name $("pin_$name"): up to date"
		return
	fi
	CURRENT_LOG=$LOGS/$name.log
	MODLIST=$WORK/$name.modules
	: >"$CURRENT_LOG"
	: >"$MODLIST"
	step "$name $("pin_$name"): building (log: $CURRENT_LOG)"
	start=$(date +%s)
	# In the background so that `set -e` stays in force inside build_<name> (an `if` condition would disable it).
	"build_$name" >>"$CURRENT_LOG" 2>&1 &
	if ! wait $!; then
		tail -n 25 "$CURRENT_LOG" >&2
		step "$name FAILED after $(($(date +%s) - start)) s; full log: $CURRENT_LOG"
		CURRENT_LOG=/dev/null
		return 1
	fi
	record "$name" $(($(date +%s) - start))
	# The source tree is only needed to build; TOOLCHAIN_KEEP_WORK=1 keeps it for debugging.
	[[ -n ${TOOLCHAIN_KEEP_WORK:-} ]] || rm -rf "${WORK:?}/$name"
	step "$name: built in $(($(date +%s) - start)) s"
	CURRENT_LOG=/dev/null
	MODLIST=/dev/null
}

cmd_build() {
	local -a wanted=("$@") name
	((${#wanted[@]})) || wanted=("${COMPONENTS[@]}")
	for name in "${wanted[@]}"; do
		declare -F "build_$name" >/dev/null || die "unknown component '$name' (known: ${COMPONENTS[*]})"
	done
	mkdir -p "$BIN" "$WORK" "$LOGS" "$RECORDS"
	step "toolchain $ROOT ($(go env GOVERSION))"
	local -a failed=()
	for name in "${wanted[@]}"; do build_one "$name" || failed+=("$name"); done
	write_manifest
	((${#failed[@]} == 0)) || die "failed: ${failed[*]} (logs in $LOGS)"
	step "done: bin dir $BIN, manifest $ROOT/manifest.json"
}

exec 3>&1
case "${1:-}" in
build)
	shift
	cmd_build "$@"
	;;
bin-dir) echo "$BIN" ;;
root-dir) echo "$ROOT" ;;
manifest) cat "$ROOT/manifest.json" ;;
components) printf '%s\n' "${COMPONENTS[@]}" ;;
*) die "usage: $0 build [component...] | bin-dir | root-dir | manifest | components" ;;
esac
