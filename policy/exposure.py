"""What reaches the app from outside the cluster, and how Consul guards its catalog."""

from __future__ import annotations

import re

from kube import HELM_RELEASE, SERVICE, dig, named
from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

EXPOSED_TYPES = ("NodePort", "LoadBalancer")
# hashicorp/consul from a repository, or a local copy of it (consulChartPath): a directory or .tgz.
CONSUL_CHART = re.compile(r"(^|/)consul(-\d[^/]*)?(\.tgz)?/?$")


def _service_not_exposed(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != SERVICE:
        return
    service_type = dig(args.props, "spec", "type") or "ClusterIP"
    allowed = (args.get_config() or {}).get("allowedServices", ())
    if service_type in EXPOSED_TYPES and args.name not in allowed:
        report_violation(
            f"{named(SERVICE, args.name)}: spec.type is '{service_type}'; expected ClusterIP "
            "(a stack that exposes it on purpose lists it under this policy's allowedServices)"
        )


def _consul_acls(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != HELM_RELEASE or not CONSUL_CHART.search(args.props.get("chart", "")):
        return
    manage = dig(args.props, "values", "global", "acls", "manageSystemACLs")
    if manage is not True:
        report_violation(
            f"{named(HELM_RELEASE, args.name)}: values.global.acls.manageSystemACLs is "
            f"{manage!r}; expected true (without ACLs any pod can register as any service)"
        )


POLICIES = [
    ResourceValidationPolicy(
        name="services-not-exposed",
        description="A Service is ClusterIP unless the stack exposes it on purpose: a NodePort or "
        "LoadBalancer opens the app to every network that reaches a node.",
        validate=_service_not_exposed,
        config_schema=PolicyConfigSchema(
            properties={"allowedServices": {"type": "array", "items": {"type": "string"}}}
        ),
    ),
    ResourceValidationPolicy(
        name="consul-acls-managed",
        description="The Consul release bootstraps ACLs (global.acls.manageSystemACLs), so "
        "registering and reading the catalog needs a token.",
        validate=_consul_acls,
    ),
]
