#!/usr/bin/env bash
# minikube for `make up CLUSTER=minikube`: a profile whose CNI enforces NetworkPolicy (Calico; a plain
# `minikube start` enforces none, so the stack's default-deny policies would be silently void) and whose
# runtime is Docker (the images are built straight into its daemon through `minikube docker-env`).
#
#   infra/minikube.sh up     start the profile, creating it when missing; refuse one made otherwise
#   infra/minikube.sh down   delete the profile
#
# MINIKUBE_PROFILE (default consul-microservices) names it. Needs minikube and python3 on PATH.
# Runs on bash 3.2 (macOS).
set -euo pipefail

PROFILE=${MINIKUBE_PROFILE:-consul-microservices}
CNI=calico
RUNTIME=docker

log() { printf '[minikube] %s\n' "$*"; }

command -v minikube >/dev/null || {
	echo "minikube.sh: minikube not found on PATH" >&2
	exit 1
}

# "<cni> <runtime>" of an existing profile; nothing when there is none.
profile_settings() {
	minikube profile list -o json 2>/dev/null | python3 -c '
import json, sys
try:
    profiles = json.load(sys.stdin).get("valid") or []
except ValueError:
    profiles = []
for profile in profiles:
    if profile.get("Name") == sys.argv[1]:
        k8s = (profile.get("Config") or {}).get("KubernetesConfig") or {}
        print(k8s.get("CNI") or "none", k8s.get("ContainerRuntime") or "none")
' "$PROFILE"
}

case "${1:-}" in
up)
	settings=$(profile_settings)
	if [ -z "$settings" ]; then
		log "creating profile $PROFILE (CNI $CNI, runtime $RUNTIME)"
		minikube start -p "$PROFILE" --cni="$CNI" --container-runtime="$RUNTIME"
		exit 0
	fi
	if [ "$settings" != "$CNI $RUNTIME" ]; then
		read -r cni runtime <<<"$settings"
		cat >&2 <<-MSG
			minikube.sh: profile $PROFILE runs CNI '$cni' and runtime '$runtime'; the stack needs CNI $CNI (a plain
			start enforces no NetworkPolicy) and runtime $RUNTIME (docker-env builds into it).
			Recreate it: make cluster-stop CLUSTER=minikube && make up CLUSTER=minikube
			(or another profile: MINIKUBE_PROFILE=<name>)
		MSG
		exit 1
	fi
	if minikube status -p "$PROFILE" >/dev/null 2>&1; then
		log "profile $PROFILE runs (CNI $CNI, runtime $RUNTIME)"
	else
		log "starting profile $PROFILE"
		minikube start -p "$PROFILE" --cni="$CNI" --container-runtime="$RUNTIME"
	fi
	;;
down)
	minikube delete -p "$PROFILE"
	;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
