"""Promises about the stack as a whole: what each namespace the program creates must come with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kube import DEPLOYMENT, HPA, NAMESPACE, NETWORK_POLICY, PDB, dig, named
from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCED_LEVELS = ("baseline", "restricted")


def _of_type(resources: Iterable[PolicyResource], resource_type: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == resource_type]


def _namespaces(resources: Iterable[PolicyResource]) -> list[tuple[PolicyResource, Any]]:
    return [(r, dig(r.props, "metadata", "name")) for r in _of_type(resources, NAMESPACE)]


def _pod_security_labels(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for namespace, _ in _namespaces(args.resources):
        level = dig(namespace.props, "metadata", "labels", ENFORCE)
        if level not in ENFORCED_LEVELS:
            report_violation(
                f"{named(NAMESPACE, namespace.name)}: metadata.labels['{ENFORCE}'] is "
                f"{level!r}; expected 'restricted' or 'baseline'",
                namespace.urn,
            )


def _denies_everything(policy: Mapping[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    return (
        not (spec.get("podSelector") or {})
        and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def _default_deny(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    denied = {
        dig(policy.props, "metadata", "namespace")
        for policy in _of_type(args.resources, NETWORK_POLICY)
        if _denies_everything(policy.props)
    }
    for namespace, name in _namespaces(args.resources):
        if name not in denied:
            report_violation(
                f"{named(NAMESPACE, namespace.name)}: no NetworkPolicy in namespace {name!r} "
                "selects every pod and denies all ingress and egress; expected one",
                namespace.urn,
            )


def _minimum_replicas(deployment: PolicyResource, autoscalers: list[PolicyResource]) -> int:
    """spec.replicas, or the minimum of the HPA that scales it (which then owns the field)."""
    name = dig(deployment.props, "metadata", "name")
    for hpa in autoscalers:
        target = dig(hpa.props, "spec", "scaleTargetRef") or {}
        if target.get("kind") == "Deployment" and target.get("name") == name:
            return int(dig(hpa.props, "spec", "minReplicas") or 1)
    return int(dig(deployment.props, "spec", "replicas") or 1)


def _selects(budget: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    if dig(budget, "metadata", "namespace") != dig(deployment, "metadata", "namespace"):
        return False
    wanted = dig(budget, "spec", "selector", "matchLabels") or {}
    labels = dig(deployment, "spec", "template", "metadata", "labels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _disruption_budgets(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    autoscalers = _of_type(args.resources, HPA)
    budgets = _of_type(args.resources, PDB)
    for deployment in _of_type(args.resources, DEPLOYMENT):
        replicas = _minimum_replicas(deployment, autoscalers)
        if replicas > 1 and not any(_selects(b.props, deployment.props) for b in budgets):
            report_violation(
                f"{named(DEPLOYMENT, deployment.name)}: {replicas} replicas and no "
                "PodDisruptionBudget selects its pods; expected one, so a node drain keeps it up",
                deployment.urn,
            )


POLICIES = [
    StackValidationPolicy(
        name="namespaces-pod-security-labels",
        description="Every namespace the program creates enforces a Pod Security level, so the "
        "API server refuses a pod that breaks it, whoever creates the pod.",
        validate=_pod_security_labels,
    ),
    StackValidationPolicy(
        name="namespaces-default-deny",
        description="Every namespace the program creates denies all ingress and egress by "
        "default, so a pod talks only along the flows declared for it.",
        validate=_default_deny,
    ),
    StackValidationPolicy(
        name="deployments-disruption-budget",
        description="A Deployment with more than one replica has a PodDisruptionBudget, so a "
        "node drain never takes every replica at once.",
        validate=_disruption_budgets,
    ),
]
