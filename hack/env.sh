# Source me (`source hack/env.sh`): the toolchain on PATH, and kubectl, pulumi and Docker clients pointed at the
# local parts (hack/cluster.sh, hack/container-engine.sh, a local file backend). Pulumi never downloads: its
# plugins are the toolchain's binaries found on PATH.
# shellcheck shell=bash

_cm_hack=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_cm_cache=${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices

# The repo's venv too: the toolchain's Python language host (built from an older sdk, hack/README.md)
# ignores Pulumi.yaml's `virtualenv` option and runs the first python3 on PATH.
export PATH="$("$_cm_hack/toolchain.sh" bin-dir):$(dirname "$_cm_hack")/.venv/bin:$PATH"
export KUBECONFIG="$("$_cm_hack/cluster.sh" kubeconfig)"
export DOCKER_HOST="$("$_cm_hack/container-engine.sh" docker-host)"
export PULUMI_BACKEND_URL="file://$_cm_cache/pulumi-state"
# Only protects the local development stacks' secrets; set your own before sourcing for anything else.
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-local-development}"
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_UPDATE_CHECK=true
export CHECKPOINT_DISABLE=1
mkdir -p "$_cm_cache/pulumi-state"
unset _cm_hack _cm_cache
