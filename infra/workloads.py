"""Each service's MicroserviceArgs, derived from its manifest (catalog.py) and its stack settings.

Why here and not in the component: Microservice stays generic (Kubernetes types and plain Python);
this module says what a manifest means for a pod: probes by protocol; its metrics port; env (its
port, Consul, its name for its traces and the collector they go to, and for each service it calls
that callee's Consul name and address); flows (its callers, Consul's health checks and the
program's Prometheus on the metrics port in, plus any client when it is exposed; its callees,
Consul's API and the trace collector out, plus DNS from network_policy.py); and its own Consul
credentials. Nothing else is open.
"""

from __future__ import annotations

from dataclasses import replace

import pulumi
import pulumi_kubernetes as k8s
from catalog import Catalog, Manifest
from config import StackConfig
from consul_acl import TOKEN_DIR, TOKEN_EXPIRATION_SECONDS
from consul_server import ConsulEndpoint
from database import DatabaseEndpoint
from images import BuiltImage
from microservice import (
    GrpcProbes,
    HttpProbes,
    MicroserviceArgs,
    ProjectedToken,
    selector_labels,
    service_address,
)
from network_policy import ANYONE, Flow, Peer, egress_rule, ingress_rule
from prometheus import LABELS as PROMETHEUS_LABELS

IMAGE_ID_ANNOTATION = "consul-microservices/image-id"
SCRAPER = Peer(PROMETHEUS_LABELS)  # the program's Prometheus (prometheusInstall), on metricsPort


def metrics_targets(catalog: Catalog) -> dict[str, int]:
    """Each service -> the port its pods serve metrics on: what Prometheus scrapes."""
    return {service.name: service.metrics_port for service in catalog}


def consul_identities(catalog: Catalog) -> dict[str, str]:
    """Each ServiceAccount (named as its service) -> the one Consul service its token may write."""
    return {service.name: service.consul_name for service in catalog}


def _consul_credentials(consul: ConsulEndpoint, service: str) -> dict:
    """How a service gets its own Consul token: a login with its projected ServiceAccount token
    (in-cluster Consul), or the fixed token from the stack's secret config (external Consul)."""
    if consul.tokens:
        return {"secret_env": {"CONSUL_HTTP_TOKEN": consul.tokens[service]}}
    if consul.auth_method:
        return {
            "env": {
                "CONSUL_LOGIN_AUTH_METHOD": consul.auth_method,
                "CONSUL_LOGIN_BEARER_TOKEN_FILE": f"{TOKEN_DIR}/token",
            },
            "projected_token": ProjectedToken(TOKEN_DIR, TOKEN_EXPIRATION_SECONDS),
        }
    return {}


def _probes(service: Manifest) -> HttpProbes | GrpcProbes:
    health = service.health
    if service.protocol == "grpc":
        return GrpcProbes(liveness_service=health.liveness, readiness_service=health.readiness)
    return HttpProbes(liveness_path=health.liveness, readiness_path=health.readiness)


def service_args(
    service: Manifest,
    catalog: Catalog,
    stack: StackConfig,
    *,
    namespace: pulumi.Input[str],
    image: BuiltImage,
    consul: ConsulEndpoint,
    pull_secret: pulumi.Input[str] | None,
    database: DatabaseEndpoint | None = None,
) -> MicroserviceArgs:
    """`stack`: the validated stack config, whose settings for the callees count too (ports);
    `database`: the one the service declares, if any."""
    settings = stack.service(service)
    port = settings.port
    callees = [
        (catalog.services[name], stack.service(catalog.services[name]).port)
        for name in service.calls
    ]
    callers = catalog.callers_of(service.name)
    discovery = {
        key: value
        for callee, callee_port in callees
        for key, value in callee.discovery_env(
            service_address(callee.name, namespace, callee_port)
        ).items()
    }
    credentials = _consul_credentials(consul, service.name)
    collector = stack.otlp_url
    env = {
        service.port_env: str(port),
        **service.env,
        "CONSUL_HTTP_ADDR": consul.http_addr,
        "CONSUL_SERVICE_NAME": service.consul_name,
        "OTEL_SERVICE_NAME": service.name,  # its traces' service.name (with a collector)
        **({"OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_endpoint} if collector else {}),
        **discovery,
        "LOG_LEVEL": settings.log_level,
        **credentials.pop("env", {}),
        **(database.env if database else {}),
    }
    secret_env = {**credentials.pop("secret_env", {}), **(database.secret_env if database else {})}
    ingress = [
        *([Flow(ANYONE, ports=(port,))] if service.exposed else []),  # clients
        *(Flow(Peer(selector_labels(caller.name)), ports=(port,)) for caller in callers),
        Flow(consul.server, ports=(port,)),  # Consul's health checks
        *([Flow(SCRAPER, ports=(service.metrics_port,))] if stack.prometheus_install else []),
    ]
    egress = [
        *(Flow(Peer(selector_labels(c.name)), ports=(p,)) for c, p in callees),
        Flow(consul.server, ports=(consul.port,)),
        *([database.flow] if database else []),
        *([Flow(Peer(cidr=stack.otlp_network), ports=(collector.port,))] if collector else []),
    ]
    args = MicroserviceArgs(
        namespace=namespace,
        image=image.ref,
        port_name=service.protocol,
        port=port,
        metrics_port=service.metrics_port,
        probes=_probes(service),
        resources=k8s.core.v1.ResourceRequirementsArgs(
            requests=settings.requests, limits=settings.limits
        ),
        tmp_size_limit=settings.limits["ephemeral-storage"],
        pod_annotations={IMAGE_ID_ANNOTATION: image.image_id},
        replicas=settings.replicas,
        max_replicas=settings.max_replicas,
        cpu_utilization=settings.cpu_utilization,
        service_type=settings.service_type,
        image_pull_secrets=[pull_secret] if pull_secret else [],
        env=env,
        secret_env=secret_env,
        ingress=[ingress_rule(flow) for flow in ingress],
        egress=[egress_rule(flow) for flow in egress],
        termination_grace_seconds=service.termination_grace_seconds,
    )
    return replace(args, **credentials)
