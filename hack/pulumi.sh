#!/usr/bin/env bash
# The project's one Pulumi convention. make, hack/env.sh, hack/preflight.py and the docs all go through it:
# - state: a file backend in <repo>/.pulumi-state (no account). PULUMI_BACKEND_URL overrides it, e.g.
#   https://api.pulumi.com for Pulumi Cloud (after `pulumi login`).
# - secrets: the local stacks (LOCAL_STACKS; their stack files commit an encryptionsalt made with it) use the
#   documented passphrase `local-development`. Any other stack uses yours (PULUMI_CONFIG_PASSPHRASE or
#   PULUMI_CONFIG_PASSPHRASE_FILE), never a default.
# - the CLI: the toolchain's pulumi (make toolchain), then ./bin, then the venv, then PATH.
# - policy: every `up` and `preview` runs the project's policy pack (policy/, its venv from
#   `make policy-venv`) with policy/config/STACK.json when that exists. POLICY_PACK= (empty) turns it off.
#   The toolchain's Python language host cannot run a Python pack (it is built from sdk v3.79.0, whose
#   RunPlugin runs the program path the engine no longer sends: `python ''`). A host of the CLI's own
#   version can: PULUMI_LANGUAGE_PYTHON (its path), else a `pulumi-language-python` on PATH that
#   reports that version (the one the CLI from get.pulumi.com installs beside itself) is put before the
#   toolchain's, and the pack runs. Without one the pack is skipped, and that is said on stderr.
#
#   hack/pulumi.sh STACK ARGS...   run `pulumi ARGS... --stack STACK` under the convention
#   hack/pulumi.sh --convention    print it as KEY=VALUE lines (nothing is run or created)
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK_DIR")
LOCAL_STACKS="dev minikube local"
LOCAL_PASSPHRASE=local-development
BACKEND=${PULUMI_BACKEND_URL:-file://$REPO/.pulumi-state}

if [[ ${1:-} == --convention ]]; then
	printf 'PULUMI_BACKEND_URL=%q\nLOCAL_STACKS=%q\nLOCAL_PASSPHRASE=%q\n' "$BACKEND" "$LOCAL_STACKS" "$LOCAL_PASSPHRASE"
	exit 0
fi
STACK=${1:?usage: $0 STACK PULUMI-ARGS... | --convention}
shift

export PULUMI_BACKEND_URL=$BACKEND PULUMI_SKIP_UPDATE_CHECK=true
# Assigned apart from the export, so that a failing toolchain.sh stops here instead of leaving an empty
# entry (the current directory) first on PATH.
TOOLCHAIN_BIN=$("$HACK_DIR/toolchain.sh" bin-dir)
USER_PATH=$PATH
export PATH="$TOOLCHAIN_BIN:$REPO/bin:$REPO/.venv/bin:$PATH"
PULUMI_CLI=$(command -v pulumi) || {
	echo "pulumi.sh: no pulumi CLI: make toolchain, or install it (https://www.pulumi.com/docs/iac/download-install/)" >&2
	exit 2
}

# python_host: the path of a Python language host of the CLI's version (see above), or nothing.
python_host() {
	local want candidate
	candidate=${PULUMI_LANGUAGE_PYTHON:-$(PATH=$USER_PATH command -v pulumi-language-python || true)}
	[[ -n $candidate && $candidate != "$TOOLCHAIN_BIN/pulumi-language-python" ]] || return 0
	if [[ $PULUMI_CLI == "$TOOLCHAIN_BIN/pulumi" ]]; then
		want=$(sed -n 's/^PULUMI_VERSION=//p' "$HACK_DIR/versions.env")
	else
		want=$("$PULUMI_CLI" version 2>/dev/null || true)
	fi
	if [[ $("$candidate" -version 2>/dev/null) == "$want" ]]; then
		echo "$candidate"
	elif [[ -n ${PULUMI_LANGUAGE_PYTHON:-} ]]; then
		echo "policy: PULUMI_LANGUAGE_PYTHON=$candidate is not pulumi-language-python $want (the CLI's version)" >&2
		exit 2
	fi
}
if [[ " $LOCAL_STACKS " == *" $STACK "* && -z ${PULUMI_CONFIG_PASSPHRASE_FILE:-} ]]; then
	export PULUMI_CONFIG_PASSPHRASE=${PULUMI_CONFIG_PASSPHRASE-$LOCAL_PASSPHRASE}
fi
if [[ $BACKEND == file://* ]]; then mkdir -p "${BACKEND#file://}"; fi

# Plugin acquisition. The Python language host names every provider package in the program's venv as a plugin
# the program needs (each package's pulumi-plugin.json: kubernetes and docker), used or not, and the engine
# downloads each one missing (get.pulumi.com, GitHub) before the first step. Where that cannot succeed
# (offline, a proxy, a registries-only machine) every command waits for it to fail: about 2.5 s of DNS
# lookups, each time. So when every plugin named is at hand (on PATH or in the plugin cache), or missing
# but unused, acquisition is off. Unused: the docker provider where PULUMI_DOCKER_PROVIDER=unused, which
# make sets on the Docker-free clusters' stacks (there, without the plugin, podman builds the images and
# the stack deploys them by digest: hack/local-stack.sh). A stack that does need a missing plugin then
# fails at once, naming `pulumi plugin install`. Otherwise acquisition stays on: a networked first run
# gets what it needs.
plugin_at_hand() { # NAME VERSION
	command -v "pulumi-resource-$1" >/dev/null ||
		[[ -d ${PULUMI_HOME:-$HOME/.pulumi}/plugins/resource-$1-v$2 ]] ||
		[[ $1 == docker && ${PULUMI_DOCKER_PROVIDER:-} == unused ]]
}
if [[ -z ${PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION:-} ]]; then
	acquire=false
	for manifest in "$REPO"/.venv/lib/python3*/site-packages/pulumi_*/pulumi-plugin.json; do
		[[ -f $manifest ]] || continue
		name=$(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$manifest")
		plugin_at_hand "$name" "$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$manifest")" || acquire=true
	done
	[[ $acquire == true ]] || export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
fi

# The toolchain's language host shadows any other: a capable one goes first, for every command alike.
pack_runs=true
if [[ -x $TOOLCHAIN_BIN/pulumi-language-python ]]; then
	host=$(python_host)
	if [[ -n $host ]]; then PATH="$(dirname "$host"):$PATH"; else pack_runs=false; fi
fi

POLICY_PACK=${POLICY_PACK-$REPO/policy}
policy_flags=()
if [[ ${1:-} == up || ${1:-} == preview ]] && [[ -n $POLICY_PACK ]]; then
	if [[ $pack_runs == false ]]; then
		echo "policy: skipped: the toolchain's pulumi-language-python (sdk v3.79.0) cannot run a Python policy pack; a host of the CLI's version runs $POLICY_PACK (PULUMI_LANGUAGE_PYTHON, or the CLI from get.pulumi.com)" >&2
	elif [[ ! -x $POLICY_PACK/.venv/bin/python ]]; then
		echo "policy: $POLICY_PACK/.venv is missing: make policy-venv" >&2
		exit 2
	else
		policy_flags=(--policy-pack "$POLICY_PACK")
		if [[ -f $POLICY_PACK/config/$STACK.json ]]; then
			policy_flags+=(--policy-pack-config "$POLICY_PACK/config/$STACK.json")
		fi
	fi
fi
# "${a[@]}" of an empty array fails under set -u in bash < 4.4 (macOS): expand it only when set.
exec "$PULUMI_CLI" "$@" ${policy_flags[@]+"${policy_flags[@]}"} --stack "$STACK"
