"""What reaches the app from outside the cluster, and how Consul guards its catalog."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from kube import HELM_RELEASE, SERVICE, dig, named
from pulumi_policy import (
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

EXPOSED_TYPES = ("NodePort", "LoadBalancer")
# The service catalog beside the pack (services/<name>/service.yaml, infra/catalog.py): a service's
# exposure is declared in its manifest (`exposed: true`), so its Service may be exposed by the stack
# (services.<name>.serviceType) without its name in this policy's config. A pack used away from the
# repository finds no manifest and allows only what its config names.
SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
SERVICE_LABEL = "app.kubernetes.io/name"  # the program's label of a service's objects


def exposed_in_manifests(root: Path = SERVICES_DIR) -> frozenset[str]:
    """The services whose manifest declares them exposed."""
    return frozenset(
        manifest.parent.name
        for manifest in root.glob("*/service.yaml")
        if (yaml.safe_load(manifest.read_text()) or {}).get("exposed") is True
    )


EXPOSED_IN_MANIFESTS = exposed_in_manifests()
# hashicorp/consul from a repository, or a local copy of it (consulChartPath): a directory or .tgz.
CONSUL_CHART = re.compile(r"(^|/)consul(-\d[^/]*)?(\.tgz)?/?$")


def _service_not_exposed(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != SERVICE:
        return
    service_type = dig(args.props, "spec", "type") or "ClusterIP"
    if service_type not in EXPOSED_TYPES:
        return
    allowed = (args.get_config() or {}).get("allowedServices", ())
    service = dig(args.props, "metadata", "labels", SERVICE_LABEL)
    if args.name not in allowed and service not in EXPOSED_IN_MANIFESTS:
        report_violation(
            f"{named(SERVICE, args.name)}: spec.type is '{service_type}'; expected ClusterIP "
            "(a service's Service is exposed on purpose when its manifest says exposed: true; "
            "any other, when this policy's allowedServices lists it)"
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
        description="A Service is ClusterIP unless it is exposed on purpose (its service's "
        "manifest says exposed: true): a NodePort or LoadBalancer opens the app to every network "
        "that reaches a node.",
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
