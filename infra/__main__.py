"""Composition root: config -> cluster -> namespaces and policies -> Consul and its logins -> images
-> workloads.

Every value is validated first (config.load), so a bad stack config registers nothing. Stack outputs
carry raw values; the port-forward hints for people come from those values, in hints.py.
"""

import dataclasses

import cluster
import config
import consul_acl
import consul_network
import consul_server
import hints
import images
import network_policy
import pulumi
import workloads
from microservice import Microservice

settings = config.load()

k8s_provider = cluster.provider(settings.kubeconfig_path, settings.kube_context_or_default)
on_cluster = pulumi.ResourceOptions(provider=k8s_provider)
app_namespace = cluster.namespace(settings.namespace, "restricted", on_cluster).metadata.name
network_policy.baseline(app_namespace, on_cluster)

consul_opts = on_cluster
if settings.consul_install:
    consul_namespace = cluster.namespace(settings.consul_namespace, "baseline", on_cluster)
    consul_opts = pulumi.ResourceOptions(provider=k8s_provider, depends_on=[consul_namespace])
consul = consul_server.deploy(settings, consul_opts)

pull_secret = images.pull_secret(settings.images, app_namespace, on_cluster)
greeter_image = images.build(workloads.GREETER, settings.images, settings.greeter_image or None)
books_image = images.build(workloads.BOOKS_API, settings.images, settings.books_api_image or None)

consul_ready = []
if consul.release:
    logins = consul_acl.ConsulServiceLogins(
        "consul-service-logins",
        consul_acl.ConsulServiceLoginsArgs(
            consul_namespace=consul.namespace,
            consul_http_addr=consul.http_addr,
            image=settings.consul_image or consul_server.CHART_CONSUL_IMAGE,
            app_namespace=app_namespace,
            identities=workloads.CONSUL_IDENTITIES,
        ),
        pulumi.ResourceOptions(provider=k8s_provider, depends_on=[consul.release]),
    )
    consul_network.policies(
        settings.consul_namespace,
        settings.namespace,
        {workloads.BOOKS_API: settings.books_api_port, workloads.GREETER: settings.greeter_port},
        consul_opts,
    )
    consul = dataclasses.replace(consul, auth_method=logins.auth_method)
    consul_ready = [consul.release, logins]
after_consul = pulumi.ResourceOptions(provider=k8s_provider, depends_on=consul_ready)
greeter = Microservice(
    workloads.GREETER,
    workloads.greeter_args(
        settings.service("greeter"),
        namespace=app_namespace,
        image=greeter_image,
        consul=consul,
        pull_secret=pull_secret,
    ),
    after_consul,
)
books_api = Microservice(
    workloads.BOOKS_API,
    workloads.books_api_args(
        settings.service("booksApi"),
        namespace=app_namespace,
        image=books_image,
        consul=consul,
        pull_secret=pull_secret,
        greeter=greeter,
    ),
    after_consul,
)

pulumi.export("namespace", app_namespace)
pulumi.export(
    "images", {workloads.GREETER: greeter_image.ref, workloads.BOOKS_API: books_image.ref}
)
pulumi.export(
    "services",
    {
        service_name: {
            "name": service.service_name,
            "namespace": service.namespace,
            "port": service.port,
            "address": service.address,
        }
        for service_name, service in (
            (workloads.GREETER, greeter),
            (workloads.BOOKS_API, books_api),
        )
    },
)
pulumi.export(
    "consul",
    {"httpAddr": consul.http_addr, "namespace": consul.namespace, "uiService": consul.ui_service},
)

kubectl = hints.kubectl(settings.kubeconfig_path, settings.kube_context_or_default)
books_port = books_api.port
pulumi.export(
    "booksApiPortForward",
    hints.port_forward(
        kubectl,
        books_api.namespace,
        books_api.service_name,
        (books_port, books_port),
        f"curl http://localhost:{books_port}/api/v1/resources/books",
    ),
)
pulumi.export("consulUiPortForward", hints.consul_ui(kubectl, consul))
