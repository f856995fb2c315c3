"""Where the policies find pods, containers and names in Kubernetes resources' inputs.

The inputs are what the program sends the engine: camelCase keys, as in a manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Resource type -> the path from its inputs to the pod spec it runs.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
NAMESPACE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
SERVICE = "kubernetes:core/v1:Service"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def dig(props: Mapping[str, Any], *path: str) -> Any:
    """The value at `path`, or None where a step is missing."""
    value: Any = props
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def kind(resource_type: str) -> str:
    """`Deployment` of `kubernetes:apps/v1:Deployment`."""
    return resource_type.rsplit(":", 1)[-1]


def named(resource_type: str, name: str) -> str:
    """How a message names a resource: its kind and its Pulumi name."""
    return f"{kind(resource_type)} '{name}'"


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec a workload runs, None for a resource that runs no pods."""
    path = POD_SPEC_PATHS.get(resource_type)
    return dig(props, *path) if path else None


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every container of a pod spec, init containers included."""
    for key in ("initContainers", "containers"):
        yield from spec.get(key) or []


def namespace_of(props: Mapping[str, Any]) -> str | None:
    return dig(props, "metadata", "namespace")
