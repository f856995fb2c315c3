# Source me (`source hack/env.sh`): the toolchain on PATH, and kubectl, pulumi and Docker clients pointed at the
# local parts (hack/cluster.sh, hack/container-engine.sh, a local file backend). Pulumi never downloads: its
# plugins are the toolchain's binaries found on PATH.
# shellcheck shell=bash

_cm_hack=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The repo's venv too: the toolchain's Python language host (built from an older sdk, hack/README.md)
# ignores Pulumi.yaml's `virtualenv` option and runs the first python3 on PATH.
# Assigned apart from the export, whose status would hide a failure (and leave an empty entry, the current
# directory, first on PATH).
if ! _cm_bin=$("$_cm_hack/toolchain.sh" bin-dir); then
	echo "hack/env.sh: \`hack/toolchain.sh bin-dir\` failed (above); nothing was set" >&2
	unset _cm_hack _cm_bin
	return 1
fi
export PATH="$_cm_bin:$(dirname "$_cm_hack")/.venv/bin:$PATH"
export KUBECONFIG="$("$_cm_hack/cluster.sh" kubeconfig)"
export DOCKER_HOST="$("$_cm_hack/container-engine.sh" docker-host)"
# The project's one backend and passphrase convention (hack/pulumi.sh, the same as make's): the file backend
# in the repo's .pulumi-state/, and the documented passphrase of the local stacks (set your own before sourcing
# for any other stack).
eval "$("$_cm_hack/pulumi.sh" --convention | sed 's/^/_cm_/')"
export PULUMI_BACKEND_URL="$_cm_PULUMI_BACKEND_URL"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-$_cm_LOCAL_PASSPHRASE}"
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_UPDATE_CHECK=true
export CHECKPOINT_DISABLE=1
mkdir -p "${PULUMI_BACKEND_URL#file://}"
unset _cm_hack _cm_bin _cm_PULUMI_BACKEND_URL _cm_LOCAL_STACKS _cm_LOCAL_PASSPHRASE
