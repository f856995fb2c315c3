"""Composition root: config -> cluster -> namespaces and policies -> Consul -> images -> workloads.

Every value is validated first (config.load), so a bad stack config registers nothing.
"""

import cluster
import config
import consul_server
import images
import network_policy
import pulumi
import workloads
from microservice import Microservice

settings = config.load()

k8s_provider = cluster.provider(settings.cluster)
on_cluster = pulumi.ResourceOptions(provider=k8s_provider)
app_namespace = cluster.namespace(settings.namespace, "restricted", on_cluster).metadata.name
network_policy.baseline(app_namespace, on_cluster)

consul_opts = on_cluster
if settings.consul.install:
    consul_namespace = cluster.namespace(settings.consul.namespace, "baseline", on_cluster)
    consul_opts = pulumi.ResourceOptions(provider=k8s_provider, depends_on=[consul_namespace])
kubectl = cluster.kubectl(settings.cluster)
registry = consul_server.deploy(settings.consul, kubectl, consul_opts)

pull_secret = images.pull_secret(settings.images, app_namespace, on_cluster)
greeter_image = images.build(workloads.GREETER, settings.images, settings.greeter.image)
books_image = images.build(workloads.BOOKS_API, settings.images, settings.books_api.image)

after_consul = pulumi.ResourceOptions(
    provider=k8s_provider, depends_on=[registry.release] if registry.release else []
)
stack = workloads.Stack(settings, app_namespace, registry, pull_secret)
greeter = Microservice(
    workloads.GREETER, workloads.greeter_args(stack, greeter_image), after_consul
)
books_api = Microservice(
    workloads.BOOKS_API, workloads.books_api_args(stack, books_image), after_consul
)

pulumi.export("namespace", app_namespace)
pulumi.export(
    "images", {workloads.GREETER: greeter_image.ref, workloads.BOOKS_API: books_image.ref}
)
pulumi.export(
    "dnsNames", {workloads.GREETER: greeter.dns_name, workloads.BOOKS_API: books_api.dns_name}
)
pulumi.export("consulHttpAddr", registry.http_addr)
books_port = settings.books_api.port
pulumi.export(
    "booksApiPortForward",
    pulumi.Output.concat(
        kubectl,
        " -n ",
        app_namespace,
        f" port-forward svc/{workloads.BOOKS_API} {books_port}:{books_port}",
        f"  # then curl http://localhost:{books_port}/api/v1/resources/books",
    ),
)
pulumi.export("consulUiPortForward", registry.ui_hint)
