#!/usr/bin/env bash
# The environment of a service that pins its own dependencies (it has tests of its own, services/<name>/tests/):
# .venvs/<name>/ with its requirements.txt and the test tools at the dev pins, made again when either changes.
# Prints its python. The tutorial's services, tested from tests/services/, use the dev venv (.venv) instead.
#
#   hack/service-venv.sh NAME
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
LOG_TAG=service-venv
# shellcheck source=lib.sh
source "$REPO/hack/lib.sh"

name=${1:?usage: $0 NAME}
[[ -f $REPO/services/$name/requirements.txt ]] || die "services/$name/requirements.txt not found"
dir=$REPO/.venvs/$name
# The test tools at the pins of the dev environment (requirements-dev.txt).
test_pins() { grep -E '^(pytest|pytest-timeout)==' "$REPO/requirements-dev.txt"; }
inputs=$({
	cat "$REPO/services/$name/requirements.txt" "$REPO/services/common/requirements.txt"
	test_pins
} | sha256sum | cut -c1-16)
if [[ ! -f $dir/.installed-$inputs ]]; then
	log "$name: environment .venvs/$name from services/$name/requirements.txt"
	rm -rf "$dir"
	"$PYTHON" -m venv "$dir"
	"$dir/bin/pip" install --quiet --upgrade pip
	(cd "$REPO/services/$name" && "$dir/bin/pip" install --quiet -r requirements.txt -r <(test_pins))
	touch "$dir/.installed-$inputs"
fi
echo "$dir/bin/python"
