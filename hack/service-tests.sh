#!/usr/bin/env bash
# The tests of a service that has its own (services/<name>/tests/), in an environment of its own: its
# requirements.txt (so a service pins what it needs, whatever the others pin) and the test tools at the
# dev pins. `make test` runs it for each such service; its code and services/common are on the path, as
# in its image (PYTHONPATH=/app/src).
#
#   hack/service-tests.sh NAME... [-- PYTEST-ARGS...]
#
# The environments live in .venvs/<name>/ (git-ignored; hack/service-venv.sh), made again when the
# service's requirements or the test pins change. PYTHON (python3) makes them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=service-tests
# shellcheck source=lib.sh
source "$REPO/hack/lib.sh"

names=()
while (($#)) && [[ $1 != -- ]]; do
	names+=("$1")
	shift
done
[[ ${1:-} != -- ]] || shift
((${#names[@]})) || die "usage: $0 NAME... [-- PYTEST-ARGS...]"

status=0
for name in "${names[@]}"; do
	[[ -d $REPO/services/$name/tests ]] || die "services/$name/tests/ not found"
	python=$("$REPO/hack/service-venv.sh" "$name")
	log "$name: services/$name/tests"
	PYTHONPATH="$REPO/services/$name/src:$REPO/services/common/src" \
		"$python" -m pytest -p no:cacheprovider "$REPO/services/$name/tests" "$@" || status=1
done
exit "$status"
