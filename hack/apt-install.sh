#!/usr/bin/env bash
# Installs the Debian packages a target needs that are missing (hack/lib.sh's install_packages); as a non-root
# user it names the apt-get line instead. Used by make targets whose tests or benchmarks run a Debian tool.
#
#   hack/apt-install.sh PACKAGE...
set -euo pipefail
LOG_TAG=apt-install
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $# -gt 0 ]] || die "usage: $0 PACKAGE..."
install_packages "$@"
