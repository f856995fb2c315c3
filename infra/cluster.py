"""The target cluster: one explicit Kubernetes provider and the namespaces the stack owns.

Why an explicit provider: "any cluster" is a kubeconfig path and context from config. With neither
set, the provider falls back to the default kubeconfig and its current context, as kubectl does.
How images reach the nodes per profile is decided in config (`imageDelivery`) and images.py:
kind pushes to its local registry (localhost:5001), minikube builds into its Docker daemon
(`eval $(minikube docker-env)`), an existing cluster pulls from a registry.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

PSS_MODES = ("enforce", "audit", "warn")
# The server-side-apply field manager of every object the program applies (the provider's own
# default is a random name per resource, drawn at its create).
FIELD_MANAGER_ANNOTATION = "pulumi.com/patchFieldManager"
FIELD_MANAGER = "consul-microservices"


def provider(kubeconfig: str | None, context: str | None) -> k8s.Provider:
    return k8s.Provider("k8s", kubeconfig=kubeconfig, context=context)


def namespace(name: str, level: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    """A namespace whose Pod Security admission labels enforce, audit and warn at `level`."""
    labels = {f"pod-security.kubernetes.io/{mode}": level for mode in PSS_MODES}
    labels |= {f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in PSS_MODES}
    return k8s.core.v1.Namespace(
        f"ns-{name}",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=labels),
        opts=opts,
    )


def one_field_manager(
    args: pulumi.ResourceTransformationArgs,
) -> pulumi.ResourceTransformationResult | None:
    """A stack transformation: every Kubernetes object is applied under FIELD_MANAGER.

    Why: an `up` killed after a create reached the cluster leaves the object out of the state,
    and the next `up` applies it again. Under a new random field manager that apply conflicted
    with the first one, and once forced, every later change conflicted with the fields the first
    one still co-owned. Under one manager it is the same owner applying the same object again.
    """
    metadata = args.props.get("metadata")
    if not args.type_.startswith("kubernetes:") or metadata is None:
        return None
    if isinstance(metadata, k8s.meta.v1.ObjectMetaArgs):
        metadata.annotations = _with_field_manager(metadata.annotations)
    elif isinstance(metadata, dict):
        args.props["metadata"] = {**metadata, "annotations": _with_field_manager(
            metadata.get("annotations"))}  # fmt: skip
    return pulumi.ResourceTransformationResult(args.props, args.opts)


def _with_field_manager(annotations: pulumi.Input[dict] | None) -> pulumi.Input[dict]:
    if annotations is None or isinstance(annotations, dict):
        return {**(annotations or {}), FIELD_MANAGER_ANNOTATION: FIELD_MANAGER}
    return pulumi.Output.from_input(annotations).apply(_with_field_manager)
