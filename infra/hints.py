"""Hints for people: the kubectl port-forward commands `make up` prints.

Why apart: stack outputs carry raw values (names, namespaces, ports, addresses) for programs and
scripts; the sentences for people are built from those same values here, and nowhere else.
"""

from __future__ import annotations

import pulumi
from catalog import Manifest
from consul_server import HTTP_PORT, UI_SERVICE_PORT, ConsulEndpoint
from microservice import Microservice
from prometheus import PORT as PROMETHEUS_PORT
from prometheus import Prometheus


def kubectl(kubeconfig: str | None, context: str | None) -> str:
    """The kubectl prefix that addresses the same cluster as the provider."""
    parts = ["kubectl"]
    if kubeconfig:
        parts.append(f"--kubeconfig {kubeconfig}")
    if context:
        parts.append(f"--context {context}")
    return " ".join(parts)


def port_forward(
    kubectl: str,
    namespace: pulumi.Input[str],
    service: pulumi.Input[str],
    ports: tuple[int, int],
    then: str,
) -> pulumi.Output[str]:
    local, remote = ports
    return pulumi.Output.concat(
        kubectl,
        " -n ",
        namespace,
        " port-forward svc/",
        service,
        f" {local}:{remote}  # then {then}",
    )


def service(kubectl: str, manifest: Manifest, workload: Microservice) -> pulumi.Output[str]:
    """How to reach an exposed service from this machine, and what to try once there."""
    port = workload.port
    then = (
        f"curl http://localhost:{port}{manifest.example_path}"
        if manifest.protocol == "http"
        else f"grpcurl -plaintext localhost:{port} list"
    )
    return port_forward(kubectl, workload.namespace, workload.service_name, (port, port), then)


def consul_ui(kubectl: str, consul: ConsulEndpoint) -> pulumi.Output[str]:
    if consul.namespace is None:
        return pulumi.Output.concat("external Consul: open ", consul.http_addr, "/ui")
    if consul.ui_service is None:
        return pulumi.Output.from_input("Consul UI disabled (consulUi is false)")
    return port_forward(
        kubectl,
        consul.namespace,
        consul.ui_service,
        (HTTP_PORT, UI_SERVICE_PORT),
        f"open http://localhost:{HTTP_PORT}/ui",
    )


def prometheus(kubectl: str, server: Prometheus | None) -> pulumi.Output[str]:
    if server is None:
        return pulumi.Output.from_input("no Prometheus (prometheusInstall is false)")
    ports = (PROMETHEUS_PORT, PROMETHEUS_PORT)
    query = f"curl 'http://localhost:{PROMETHEUS_PORT}/api/v1/query?query=up'"
    return port_forward(kubectl, server.namespace, server.service_name, ports, query)
