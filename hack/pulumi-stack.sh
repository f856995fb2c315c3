#!/usr/bin/env bash
# One pulumi command on a stack, under the project's convention (hack/pulumi.sh: backend, passphrase, CLI):
# creates the stack when missing and, when this run created it and it holds no resource afterwards (a
# `preview`, or an `up` that failed before creating anything), removes it again. So a failure leaves no
# empty stack behind. The stack file Pulumi.<stack>.yaml is never written: the local stacks commit their
# encryptionsalt, and the removal keeps the file (--preserve-config).
#
# An update that was killed (SIGKILL, a CI job cancelled, a closed laptop) leaves the stack locked in a file
# backend and its interrupted steps as pending operations in the state. Before each command, a lock whose
# pulumi process is gone from this host is removed (`pulumi cancel`), with the plugins it left running. The
# next `up` redoes the pending operations: a create that had reached the cluster is applied again by the
# same field manager (infra/cluster.py one_field_manager). Once it has succeeded, the pending creates,
# which the state keeps until a refresh, are cleared. A Helm release whose install or upgrade was
# interrupted stays `pending-install` (or -upgrade) in the cluster, and Helm refuses to install or upgrade
# it again ("cannot re-use a name that is still in use"): that record is removed with kubectl, so the
# redone install adopts the objects the interrupted one made (they carry the release's ownership
# annotations) and an upgrade starts again from the last deployed revision. After any `up` that did not finish,
# the next successful one waits for the stack's rollouts (below). Each step is printed.
#
#   hack/pulumi-stack.sh STACK init            create the stack if missing (and keep it)
#   hack/pulumi-stack.sh STACK PULUMI-ARGS...  e.g. `up --yes --skip-preview`
set -euo pipefail

STACK=${1:?usage: $0 STACK init | PULUMI-ARGS...}
shift
pulumi() { "$(dirname "${BASH_SOURCE[0]}")/pulumi.sh" "$STACK" "$@"; }
eval "$("$(dirname "${BASH_SOURCE[0]}")/pulumi.sh" --convention)"
# kubectl, for clearing an interrupted Helm release and awaiting rollouts: the user's, else the toolchain's.
PATH="$PATH:$("$(dirname "${BASH_SOURCE[0]}")/toolchain.sh" bin-dir)"

exists() { pulumi stack select --non-interactive >/dev/null 2>&1; }

# resources STACK: how many resources the stack's state holds, the stack itself and providers not counted.
resources() {
	pulumi stack export | python3 -c '
import json, sys
deployment = json.load(sys.stdin).get("deployment") or {}
print(sum(not r["type"].startswith("pulumi:") for r in deployment.get("resources") or []))'
}

# What a file backend holds of STACK that an interrupted update leaves: its locks ("lock PID HOST SINCE"
# lines) and the pending operations of its state ("pending TYPE URN" lines). Read from the files, so a
# healthy stack costs no extra pulumi run.
leftovers() {
	[[ $PULUMI_BACKEND_URL == file://* ]] || return 0
	python3 - "${PULUMI_BACKEND_URL#file://}/.pulumi" "$STACK" <<-'EOF'
		import gzip, json, pathlib, sys
		root, stack = pathlib.Path(sys.argv[1]), sys.argv[2]
		for lock in sorted(root.glob(f"locks/**/{stack}/*.json")):
		    content = json.loads(lock.read_text())
		    print("lock", content["pid"], content["hostname"], content["timestamp"])
		for state in sorted(root.glob(f"stacks/**/{stack}.json*")):
		    if state.suffix not in (".json", ".gz"):
		        continue
		    text = gzip.decompress(state.read_bytes()) if state.suffix == ".gz" else state.read_bytes()
		    checkpoint = json.loads(text).get("checkpoint") or {}
		    for op in (checkpoint.get("latest") or {}).get("pending_operations") or []:
		        print("pending", op["type"], op["resource"]["urn"])
	EOF
}

# The plugins of a killed pulumi (language hosts, providers; each leads its own process group) outlive it,
# adopted by init: stopped, so that interrupted updates do not pile them up.
stop_orphaned_plugins() {
	local pid
	command -v ps >/dev/null || return 0 # a minimal Debian has no procps
	for pid in $(ps -eo pid=,ppid=,args= | awk '$2 == 1 && $0 ~ /pulumi-(language|resource|analyzer)-/ { print $1 }'); do
		echo "pulumi-stack: stopping plugin $(ps -o args= -p "$pid" | cut -c1-100) (pid $pid), left by the interrupted update"
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	done
}

# Whether PID is a pulumi that still runs: not gone, not a zombie nobody reaped, not a reused PID.
# Without ps (a minimal Debian), any process of that PID counts.
pulumi_runs() {
	local state
	if ! command -v ps >/dev/null; then
		kill -0 "$1" 2>/dev/null
		return
	fi
	state=$(ps -o stat=,comm= -p "$1" 2>/dev/null) || return 1
	[[ $state != Z* && $state == *pulumi* ]]
}

# Unlocks the stack when every lock was left by a pulumi process of this host that is gone; notes pending
# creates, for clearing after a successful `up`.
recover_interrupted_update() {
	local found kind pid host since
	found=$(leftovers)
	[[ -n $found ]] || return 0
	if grep -q '^lock ' <<<"$found"; then
		while read -r kind pid host since; do
			[[ $kind == lock ]] || continue
			if [[ $host != "$(hostname)" ]] || pulumi_runs "$pid"; then
				echo "pulumi-stack: stack $STACK is locked by an update that still runs (pid $pid on $host)" >&2
				return 0
			fi
		done <<<"$found"
		pulumi cancel --yes >/dev/null
		sed -n 's/^lock \([0-9]*\) [^ ]* \(.*\)/pulumi-stack: removed the lock of an interrupted update (pid \1, since \2)/p' <<<"$found"
		stop_orphaned_plugins
	fi
	if grep -q '^pending ' <<<"$found"; then
		echo "pulumi-stack: the interrupted update left pending operations:"
		sed -n 's/^pending /  /p' <<<"$found"
	fi
	if grep -q '^pending creating ' <<<"$found"; then pending_creates=true; fi
	if grep -Eq '^pending (creating|updating) .*::kubernetes:helm\.sh/v3:Release::' <<<"$found"; then
		clear_interrupted_releases
	fi
}

# "TYPE NAMESPACE NAME KUBECONFIG CONTEXT" (separated by \x1f; empty: kubectl's default) of the stack's
# Kubernetes objects that WHAT names, with their provider's settings, from DIR/state.json (the stack's export):
#   releases   each Helm release whose create or update the interrupted update left pending;
#   workloads  each Deployment and StatefulSet.
# A kubeconfig given as content is written to a file in DIR.
stack_objects() {
	python3 - "$1" "$2" <<-'EOF'
		import json, pathlib, sys
		what, directory = sys.argv[1], pathlib.Path(sys.argv[2])
		latest = json.loads((directory / "state.json").read_text())["deployment"]
		resources = latest.get("resources") or []
		providers = {f"{r['urn']}::{r.get('id')}": r.get("inputs") or {} for r in resources}
		if what == "releases":
		    found = [
		        (op["resource"], (op["resource"].get("inputs") or {}))
		        for op in latest.get("pending_operations") or []
		        if op["type"] in ("creating", "updating") and op["resource"]["type"] == "kubernetes:helm.sh/v3:Release"
		    ]
		else:
		    kinds = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
		    found = [(r, (r.get("outputs") or {}).get("metadata") or {}) for r in resources if r["type"] in kinds]
		for n, (resource, names) in enumerate(found):
		    settings = providers.get(resource.get("provider", ""), {})
		    kubeconfig, context = settings.get("kubeconfig", ""), settings.get("context", "")
		    if kubeconfig.lstrip().startswith(("{", "apiVersion")):
		        path = directory / f"kubeconfig-{n}"
		        path.write_text(kubeconfig)
		        kubeconfig = str(path)
		    kind = resource["type"].rsplit(":", 1)[1].lower()
		    print(kind, names.get("namespace") or "default", names["name"], kubeconfig, context, sep="\x1f")
	EOF
}

# Runs COMMAND (a function) with "KIND NAMESPACE NAME KUBECTL-FLAGS..." for each of stack_objects WHAT; without
# kubectl, says what it would have done (DESCRIPTION) and does nothing.
with_stack_objects() {
	local what=$1 command=$2 description=$3 dir kind namespace name kubeconfig context flags
	dir=$(mktemp -d)
	pulumi stack export --show-secrets >"$dir/state.json" || return 1
	while IFS=$'\x1f' read -r kind namespace name kubeconfig context; do
		flags=(-n "$namespace")
		if [[ -n $kubeconfig ]]; then flags+=(--kubeconfig "$kubeconfig"); fi
		if [[ -n $context ]]; then flags+=(--context "$context"); fi
		if ! command -v kubectl >/dev/null; then
			echo "pulumi-stack: no kubectl: $description of $kind $namespace/$name is not done" >&2
			continue
		fi
		"$command" "$kind" "$namespace" "$name" "${flags[@]}"
	done < <(stack_objects "$what" "$dir")
	rm -rf "$dir"
}

HELM_PENDING='owner=helm,status in (pending-install,pending-upgrade,pending-rollback)'
clear_pending_release() {
	local namespace=$2 name=$3 record
	shift 3
	for record in $(kubectl "$@" get secret -l "$HELM_PENDING,name=$name" -o name); do
		kubectl "$@" delete "$record" >/dev/null
		echo "pulumi-stack: removed ${record#secret/}, Helm's record of release $namespace/$name's interrupted install or upgrade (the update installs it again, adopting what it made)"
	done
}
clear_interrupted_releases() {
	with_stack_objects releases clear_pending_release "clearing Helm's pending record (kubectl delete secret -l '$HELM_PENDING,name=NAME')"
}

await_rollout() {
	local kind=$1 namespace=$2 name=$3
	shift 3
	echo "pulumi-stack: waiting for the rollout of $kind $namespace/$name"
	if ! kubectl "$@" rollout status "$kind/$name" --timeout="${ROLLOUT_TIMEOUT:-300s}" >/dev/null; then
		echo "pulumi-stack: $kind $namespace/$name has not rolled out (kubectl -n $namespace rollout status $kind/$name)" >&2
		rollouts_failed=true
	fi
}

created=false pending_creates=false
if ! exists; then
	pulumi stack init --non-interactive >/dev/null
	created=true
	echo "pulumi-stack: created stack $STACK in $PULUMI_BACKEND_URL"
fi
[[ ${1:-} == init ]] && exit 0
$created || recover_interrupted_update

# An `up` that did not finish (killed, Ctrl-C, failed) may have started rollouts that the next `up` does not
# wait for: the provider, finding the new template already applied, awaits only enough ready pods, old ones
# included (pulumi-kubernetes await/deployment.go). So a marker is left while an `up` runs, and the next
# successful `up` that finds it waits for each Deployment's and StatefulSet's rollout (kubectl rollout status).
unsettled=""
if [[ ${1:-} == up && $PULUMI_BACKEND_URL == file://* ]]; then
	unsettled=${PULUMI_BACKEND_URL#file://}/.pulumi-stack/$STACK.unsettled
	if [[ -f $unsettled ]]; then was_unsettled=true; else was_unsettled=false; fi
	mkdir -p "$(dirname "$unsettled")"
	: >"$unsettled"
fi

status=0
pulumi "$@" || status=$?
if [[ -n $unsettled ]] && ((status == 0)); then
	if $was_unsettled; then
		echo "pulumi-stack: the last \`up\` of stack $STACK did not finish; its rollouts may still run"
		rollouts_failed=false
		with_stack_objects workloads await_rollout "waiting for the rollout" || status=$?
		if $rollouts_failed; then status=1; fi
	fi
	((status)) || rm -f "$unsettled"
fi
if $pending_creates && ((status == 0)) && [[ $1 == up ]]; then
	echo "pulumi-stack: the update has made every resource: clearing the pending creates (pulumi refresh --clear-pending-creates)"
	config_file=()
	while (($#)); do
		if [[ $1 == --config-file ]]; then config_file=(--config-file "$2"); fi
		shift
	done
	pulumi refresh --yes --skip-preview --clear-pending-creates ${config_file[@]+"${config_file[@]}"} >/dev/null || status=$?
fi
if $created; then
	left=$(resources)
	if ((left == 0)); then
		pulumi stack rm --yes --force --preserve-config >/dev/null
		echo "pulumi-stack: removed stack $STACK again (created by this run, holds no resource)"
	elif ((status)); then
		echo "pulumi-stack: stack $STACK holds $left resources from the failed run: \`make down\` destroys them" >&2
	fi
fi
exit "$status"
