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
