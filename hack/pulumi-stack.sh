#!/usr/bin/env bash
# One pulumi command on a stack, under the project's convention (hack/pulumi.sh: backend, passphrase, CLI):
# creates the stack when missing and, when this run created it and it holds no resource afterwards (a
# `preview`, or an `up` that failed before creating anything), removes it again. So a failure leaves no
# empty stack behind. The stack file Pulumi.<stack>.yaml is never written: the local stacks commit their
# encryptionsalt, and the removal keeps the file (--preserve-config).
#
#   hack/pulumi-stack.sh STACK init            create the stack if missing (and keep it)
#   hack/pulumi-stack.sh STACK PULUMI-ARGS...  e.g. `up --yes --skip-preview`
set -euo pipefail

STACK=${1:?usage: $0 STACK init | PULUMI-ARGS...}
shift
pulumi() { "$(dirname "${BASH_SOURCE[0]}")/pulumi.sh" "$STACK" "$@"; }
eval "$("$(dirname "${BASH_SOURCE[0]}")/pulumi.sh" --convention)"

exists() { pulumi stack select --non-interactive >/dev/null 2>&1; }

# resources STACK: how many resources the stack's state holds, the stack itself and providers not counted.
resources() {
	pulumi stack export | python3 -c '
import json, sys
deployment = json.load(sys.stdin).get("deployment") or {}
print(sum(not r["type"].startswith("pulumi:") for r in deployment.get("resources") or []))'
}

created=false
if ! exists; then
	pulumi stack init --non-interactive >/dev/null
	created=true
	echo "pulumi-stack: created stack $STACK in $PULUMI_BACKEND_URL"
fi
[[ ${1:-} == init ]] && exit 0

status=0
pulumi "$@" || status=$?
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
