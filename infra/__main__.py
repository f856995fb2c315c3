"""Composition root: services and config -> cluster -> namespaces and policies -> Consul and its
logins -> each service's database, image and workload -> Prometheus, when on -> outputs.

The service catalog (services/*/service.yaml) and the stack config are validated first, so a bad
manifest or value registers nothing. Stack outputs carry raw values; the port-forward hints for
people come from those values, in hints.py.
"""

import dataclasses

import catalog
import cluster
import config
import consul_acl
import consul_network
import consul_server
import database
import hints
import images
import network_policy
import prometheus
import pulumi
import workloads
from microservice import Microservice

services = catalog.load()
settings = config.load(services)

pulumi.runtime.register_stack_transformation(cluster.one_field_manager)
k8s_provider = cluster.provider(settings.kubeconfig_path, settings.kube_context_or_default)
on_cluster = pulumi.ResourceOptions(provider=k8s_provider)
app_namespace = cluster.namespace(settings.namespace, "restricted", on_cluster).metadata.name
network_policy.baseline(app_namespace, on_cluster)

kubernetes_api = None
if settings.consul_install or settings.prometheus_install:
    kubernetes_api = network_policy.kubernetes_api(on_cluster)

consul_opts = on_cluster
if settings.consul_install:
    consul_namespace = cluster.namespace(settings.consul_namespace, "baseline", on_cluster)
    consul_opts = pulumi.ResourceOptions(provider=k8s_provider, depends_on=[consul_namespace])
consul = consul_server.deploy(settings, consul_opts)

consul_ready = []
if consul.release:
    logins = consul_acl.ConsulServiceLogins(
        "consul-service-logins",
        consul_acl.ConsulServiceLoginsArgs(
            consul_namespace=consul.namespace,
            consul_http_addr=consul.http_addr,
            image=settings.consul_image or consul_server.CHART_CONSUL_IMAGE,
            app_namespace=app_namespace,
            identities=workloads.consul_identities(services),
        ),
        pulumi.ResourceOptions(provider=k8s_provider, depends_on=[consul.release]),
    )
    consul_network.policies(
        settings.consul_namespace,
        settings.namespace,
        {service.name: settings.service(service).port for service in services},
        api=kubernetes_api,
        opts=consul_opts,
        ui_metrics=prometheus.ui_flow(settings.namespace) if settings.consul_ui_metrics else None,
    )
    consul = dataclasses.replace(consul, auth_method=logins.auth_method)
    consul_ready = [consul.release, logins]
after_consul = pulumi.ResourceOptions(provider=k8s_provider, depends_on=consul_ready)

pull_secret = images.pull_secret(settings.images, app_namespace, on_cluster)
databases = {
    service.name: database.for_service(service, settings, app_namespace, pull_secret, on_cluster)
    for service in services
    if service.database
}
built = {
    service.name: images.build(
        service.name, services.root, settings.images, settings.service(service).image
    )
    for service in services
}
deployed = {
    service.name: Microservice(
        service.name,
        workloads.service_args(
            service,
            services,
            settings,
            namespace=app_namespace,
            image=built[service.name],
            consul=consul,
            pull_secret=pull_secret,
            database=databases.get(service.name),
        ),
        after_consul,
    )
    for service in services
}

scraper = None
if settings.prometheus_install:
    ui_clients = [consul.server] if settings.consul_ui_metrics else []
    scraper = prometheus.Prometheus(
        "prometheus",
        prometheus.PrometheusArgs(
            namespace=app_namespace,
            image=settings.prometheus_image or prometheus.DEFAULT_IMAGE,
            targets=workloads.metrics_targets(services),
            kubernetes_api=kubernetes_api,
            clients=ui_clients,
            image_pull_secrets=[pull_secret] if pull_secret else [],
        ),
        on_cluster,
    )

pulumi.export("namespace", app_namespace)
pulumi.export("images", {name: image.ref for name, image in built.items()})
pulumi.export(
    "services",
    {
        name: {
            "name": workload.service_name,
            "namespace": workload.namespace,
            "port": workload.port,
            "address": workload.address,
        }
        for name, workload in deployed.items()
    },
)
pulumi.export(
    "consul",
    {"httpAddr": consul.http_addr, "namespace": consul.namespace, "uiService": consul.ui_service},
)

kubectl = hints.kubectl(settings.kubeconfig_path, settings.kube_context_or_default)
pulumi.export(
    "portForwards",
    {
        service.name: hints.service(kubectl, service, deployed[service.name])
        for service in services
        if service.exposed
    },
)
pulumi.export("consulUiPortForward", hints.consul_ui(kubectl, consul))
pulumi.export("prometheus", {"address": scraper.address} if scraper else None)
pulumi.export("prometheusPortForward", hints.prometheus(kubectl, scraper))
