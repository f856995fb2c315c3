"""Invariants of the whole program under mocks, once per profile: kind, minikube, existing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from infra_harness import (
    CATALOG,
    COMPONENT,
    CREDENTIALS,
    DEPLOYMENT,
    HPA,
    IMAGE,
    K8S_PROVIDER,
    NAMESPACE,
    NETPOL,
    PDB,
    PROFILES,
    REGISTRY_TOKEN,
    RELEASE,
    ROOT,
    SECRET_KEYS,
    SERVICE,
    SERVICE_ACCOUNT,
    SERVICES,
    STATEFULSET,
    Deployment,
    deploy,
    fake_digest,
    infra_module,
)
from pulumi.runtime import rpc


@pytest.fixture(scope="module", params=sorted(PROFILES))
def profile_run(request) -> tuple[str, Deployment]:
    """One program run per profile, shared by this module's tests."""
    return request.param, deploy(PROFILES[request.param], SECRET_KEYS)


APP_NS = "consul-microservices"
# The port each service declares, named by its protocol (no stack here overrides a port).
PORTS = {service.name: (service.protocol, service.port) for service in CATALOG}


def unwrap_secret(value: dict):
    """The value inside Pulumi's secret envelope; fails if the value was sent in the clear."""
    assert isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig
    return value["value"]


def _contains(labels: dict, selector: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_cluster_resource_goes_through_the_configured_provider(profile_run):
    profile, run = profile_run
    provider = run.one(K8S_PROVIDER, "k8s").inputs
    expected = {
        "kind": (None, "kind-consul-microservices"),
        "minikube": (None, "minikube"),
        "existing": (str(Path("~/.kube/prod.yaml").expanduser()), "prod"),
    }[profile]
    assert (provider.get("kubeconfig"), provider.get("context")) == expected
    cluster_resources = [r for r in run.resources if r.typ.startswith("kubernetes:")]
    assert len(cluster_resources) >= 15
    for resource in cluster_resources:
        assert resource.provider and "pulumi:providers:kubernetes::k8s" in resource.provider, (
            resource.name
        )


@pytest.mark.parametrize("service", SERVICES)
def test_selectors_agree_with_pod_labels(profile_run, service):
    _, run = profile_run
    spec = run.deployment(service)["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    selector = spec["selector"]["matchLabels"]
    assert selector and _contains(pod_labels, selector)
    assert run.one(SERVICE, f"{service}-service").inputs["spec"]["selector"] == selector
    assert run.one(PDB, f"{service}-pdb").inputs["spec"]["selector"]["matchLabels"] == selector
    netpol = run.one(NETPOL, f"{service}-netpol").inputs["spec"]
    assert netpol["podSelector"]["matchLabels"] == selector
    # No other service's selector matches these pods.
    for other in (s for s in SERVICES if s != service):
        assert not _contains(pod_labels, run.deployment(other)["spec"]["selector"]["matchLabels"])


def test_services_end_without_waiting_for_their_endpoints_to_settle(profile_run):
    """The provider's Service await adds 10 s after the last endpoint change; the workloads'
    awaits already wait for ready pods (infra/microservice.py SERVICE_ANNOTATIONS)."""
    profile, run = profile_run
    services = run.of_type(SERVICE)
    prometheus = PROFILES[profile].get("prometheusInstall") == "true"
    assert len(services) == len(SERVICES) + 1 + prometheus  # the database's, and Prometheus's
    for service in services:
        assert service.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    for workload in run.of_type(DEPLOYMENT) + run.of_type(STATEFULSET):
        assert "pulumi.com/skipAwait" not in workload.inputs["metadata"].get("annotations", {})


@pytest.mark.parametrize("service", SERVICES)
def test_service_ports_target_named_container_ports(profile_run, service):
    """The Service reaches the service's port only; the metrics port is the container's too."""
    _, run = profile_run
    container_ports = {p["name"]: p["containerPort"] for p in run.container(service)["ports"]}
    metrics_port = CATALOG.services[service].metrics_port
    assert container_ports == {PORTS[service][0]: PORTS[service][1], "metrics": metrics_port}
    (port,) = run.one(SERVICE, f"{service}-service").inputs["spec"]["ports"]
    assert port["name"] == port["targetPort"] == PORTS[service][0]
    assert port["port"] == container_ports[port["targetPort"]]


def test_books_api_service_type_follows_config(profile_run):
    profile, run = profile_run
    expected = {"kind": "ClusterIP", "minikube": "ClusterIP", "existing": "LoadBalancer"}
    assert run.one(SERVICE, "books-api-service").inputs["spec"]["type"] == expected[profile]
    assert run.one(SERVICE, "greeter-service").inputs["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("service", SERVICES)
def test_env_wires_consul_and_the_pod_identity(profile_run, service):
    _, run = profile_run
    manifest = CATALOG.services[service]
    env = run.env(service)
    assert env["CONSUL_HTTP_ADDR"] == "http://consul-server.consul.svc:8500"
    assert env["CONSUL_SERVICE_NAME"] == manifest.consul_name
    assert env["SERVICE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SERVICE_ADDRESS"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env[manifest.port_env] == str(PORTS[service][1])
    assert env["METRICS_PORT"] == str(manifest.metrics_port)
    assert env["OTEL_SERVICE_NAME"] == service
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env  # no collector named: tracing off
    assert manifest.env.items() <= env.items()


def test_the_tutorials_services_keep_their_contract(profile_run):
    """The seed's names and the services' own variables, as before the catalog."""
    _, run = profile_run
    assert run.env("greeter")["CONSUL_SERVICE_NAME"] == "example-service"
    assert run.env("greeter")["GRPC_PORT"] == "50051"
    assert run.env("greeter")["GRACE_PERIOD_SECONDS"] == "10"
    # Its manifest's 15 s after SIGTERM, plus the drain before it.
    assert (
        run.deployment("greeter")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 20
    )
    assert run.env("books-api")["CONSUL_SERVICE_NAME"] == "books-api"
    assert run.env("books-api")["PORT"] == "8080"


def test_books_api_finds_greeter_by_consul_name_and_static_fallback(profile_run):
    _, run = profile_run
    env = run.env("books-api")
    assert env["GREETER_SERVICE_NAME"] == "example-service"
    greeter_service = run.one(SERVICE, "greeter-service").inputs
    name, namespace = greeter_service["metadata"]["name"], greeter_service["metadata"]["namespace"]
    assert env["GREETER_ADDR"] == f"{name}.{namespace}.svc:50051"
    assert env["GREETER_ADDR"] == run.outputs["services"]["greeter"]["address"]  # the component's


def test_consul_images_replace_the_charts_when_given():
    mirror = "mirror.example.com/hashicorp/consul:1.21.2"
    k8s_mirror = "mirror.example.com/hashicorp/consul-k8s-control-plane@sha256:" + "b" * 64
    run = deploy(PROFILES["kind"] | {"consulImage": mirror, "consulK8sImage": k8s_mirror})
    (release,) = run.of_type(RELEASE)
    assert release.inputs["values"]["global"]["image"] == mirror
    assert release.inputs["values"]["global"]["imageK8S"] == k8s_mirror
    (default,) = deploy(PROFILES["kind"]).of_type(RELEASE)
    assert not {"image", "imageK8S"} & set(default.inputs["values"]["global"])


@pytest.mark.parametrize("service", SERVICES)
def test_deployments_run_the_built_image_by_digest(profile_run, service):
    profile, run = profile_run
    image = run.one(IMAGE, f"image-{service}").inputs
    container = run.container(service)
    annotations = run.deployment(service)["spec"]["template"]["metadata"]["annotations"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert not container["image"].endswith(":latest")
    name = image["imageName"]
    if profile == "minikube":  # built into the node's Docker daemon, never pushed: a content tag
        assert re.fullmatch(rf".*{service}:[0-9a-f]{{12}}", name)
        assert image["skipPush"] is True
        assert container["image"] == name
        assert annotations["consul-microservices/image-id"] == fake_digest(name)
    else:
        assert image["skipPush"] is False
        assert container["image"] == f"{name.rsplit(':', 1)[0]}@{fake_digest(name)}"


@pytest.mark.parametrize("service", SERVICES)
def test_images_build_the_services_folder_from_the_one_services_context(profile_run, service):
    profile, run = profile_run
    build = run.one(IMAGE, f"image-{service}").inputs["build"]
    assert Path(build["context"]) == ROOT / "services"
    assert build["args"]["SERVICE"] == service
    # The folder's own Dockerfile (a link to the shared one), so its own .dockerignore applies.
    dockerfile = Path(build["dockerfile"])
    assert dockerfile == ROOT / "services" / service / "Dockerfile"
    assert dockerfile.resolve() == ROOT / "services" / "Dockerfile"
    prefix = {
        "kind": "localhost:5001/",
        "minikube": "",
        "existing": "registry.example.com/consul-microservices/",
    }[profile]
    assert run.one(IMAGE, f"image-{service}").inputs["imageName"].startswith(f"{prefix}{service}:")


def test_registry_credentials_stay_secret(profile_run):
    profile, run = profile_run
    images = run.of_type(IMAGE)
    if profile != "existing":
        assert all("registry" not in i.inputs for i in images)
        assert not [s for s in run.of_type(CREDENTIALS) if s.name == "registry-credentials"]
        return
    for image in images:
        registry = unwrap_secret(image.inputs["registry"])
        assert registry == {
            "server": "registry.example.com",
            "username": "ci-robot",
            "password": REGISTRY_TOKEN,
        }
    secret = run.one(CREDENTIALS, "registry-credentials")
    assert secret.inputs["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(unwrap_secret(secret.inputs["stringData"])[".dockerconfigjson"])
    assert config["auths"]["registry.example.com"]["password"] == REGISTRY_TOKEN
    for service in SERVICES:
        pod = run.deployment(service)["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert REGISTRY_TOKEN not in repr(run.deployment(service))
    assert REGISTRY_TOKEN not in repr(run.outputs)


@pytest.mark.parametrize("service", SERVICES)
def test_pods_are_locked_down(profile_run, service):
    _, run = profile_run
    pod = run.deployment(service)["spec"]["template"]["spec"]
    container = run.container(service)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == sc["runAsGroup"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # /tmp, and the one ServiceAccount token the pod has: for its Consul login (test_infra_acl.py)
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "serviceaccount-token", "mountPath": "/var/run/secrets/consul", "readOnly": True},
    ]
    tmp, token = pod["volumes"]
    assert tmp["name"] == "tmp" and "emptyDir" in tmp
    assert [s["serviceAccountToken"]["path"] for s in token["projected"]["sources"]] == ["token"]
    account = run.one(SERVICE_ACCOUNT, f"{service}-sa").inputs
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("service", SERVICES)
def test_containers_have_requests_and_limits(profile_run, service):
    _, run = profile_run
    resources = run.container(service)["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory", "ephemeral-storage"}


def test_probes_use_http_for_books_api_and_native_grpc_for_greeter(profile_run):
    _, run = profile_run
    books = run.container("books-api")
    assert books["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert books["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert books["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    greeter = run.container("greeter")
    assert greeter["startupProbe"]["grpc"] == {"port": 50051, "service": ""}
    assert greeter["livenessProbe"]["grpc"] == {"port": 50051, "service": ""}
    assert greeter["readinessProbe"]["grpc"] == {"port": 50051, "service": "ExampleService"}


def test_greeter_readiness_names_the_protos_fully_qualified_service():
    proto = (ROOT / "services" / "protos" / "example.proto").read_text()
    package = re.search(r"^\s*package\s+([\w.]+)\s*;", proto, re.MULTILINE)
    service = re.search(r"^\s*service\s+(\w+)", proto, re.MULTILINE)
    assert service, "example.proto declares no service"
    expected = f"{package[1]}.{service[1]}" if package else service[1]
    assert expected == CATALOG.services["greeter"].health.readiness


@pytest.mark.parametrize("service", SERVICES)
def test_rollouts_keep_capacity_and_spread(profile_run, service):
    profile, run = profile_run
    spec = run.deployment(service)["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    overrides = json.loads(PROFILES[profile]["services"]).get(service, {})
    replicas, max_replicas = overrides.get("replicas", 2), overrides.get("maxReplicas", 0)
    spread = spec["template"]["spec"].get("topologySpreadConstraints")
    if replicas > 1:
        (constraint,) = spread
        assert constraint["topologyKey"] == "kubernetes.io/hostname"
        assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    else:
        assert not spread
    # A lost node's pods are replaced after 30 s, not Kubernetes' default 300 s.
    tolerations = spec["template"]["spec"]["tolerations"]
    assert {(t["key"], t["effect"], t["tolerationSeconds"]) for t in tolerations} == {
        ("node.kubernetes.io/not-ready", "NoExecute", 30),
        ("node.kubernetes.io/unreachable", "NoExecute", 30),
    }
    hpas = [h for h in run.of_type(HPA) if h.name == f"{service}-hpa"]
    if max_replicas:
        assert "replicas" not in spec  # the HPA owns it
        (hpa,) = hpas
        assert hpa.inputs["spec"]["minReplicas"] == replicas
        assert hpa.inputs["spec"]["maxReplicas"] == max_replicas
        assert hpa.inputs["spec"]["scaleTargetRef"]["name"] == service
    else:
        assert spec["replicas"] == replicas
        assert not hpas
    assert run.one(PDB, f"{service}-pdb").inputs["spec"]["maxUnavailable"] == 1


def test_namespaces_carry_pod_security_labels(profile_run):
    _, run = profile_run
    app = run.one(NAMESPACE, f"ns-{APP_NS}").inputs["metadata"]
    for mode in ("enforce", "audit", "warn"):
        assert app["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    consul = run.one(NAMESPACE, "ns-consul").inputs["metadata"]
    assert consul["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    for service in SERVICES:
        assert run.deployment(service)["metadata"]["namespace"] == APP_NS


def test_consul_chart_is_pinned_and_agentless(profile_run):
    profile, run = profile_run
    (release,) = run.of_type(RELEASE)
    inputs = release.inputs
    assert inputs["chart"] == "consul"
    assert inputs["name"] == "consul"
    assert inputs["repositoryOpts"] == {"repo": "https://helm.releases.hashicorp.com"}
    assert inputs["version"] == "1.9.3"
    assert inputs["namespace"] == "consul"
    values = inputs["values"]
    assert values["global"]["name"] == "consul"
    assert values["client"] == {"enabled": False}
    assert values["connectInject"] == {"enabled": False}
    assert values["ui"]["enabled"] is True
    server = values["server"]
    if profile == "existing":  # three servers keep the chart's required anti-affinity
        assert server["replicas"] == 3 and "affinity" not in server
        assert server["storage"] == "10Gi"
    else:  # the single-server dev profile fits one node
        assert server == {"replicas": 1, "storage": "1Gi", "affinity": ""}


def test_workloads_are_microservice_components(profile_run):
    _, run = profile_run
    components = [r.name for r in run.of_type(COMPONENT)]
    assert sorted(components) == sorted(SERVICES)
    for service in SERVICES:
        owned = [u for u in run.urns if f"{COMPONENT}$" in u and f"::{service}-" in u]
        kinds = {u.split("$")[-1].split("::")[0] for u in owned}
        assert {DEPLOYMENT, SERVICE, PDB, NETPOL, SERVICE_ACCOUNT} <= kinds


def test_outputs_carry_raw_values_and_hints_are_built_from_them(profile_run):
    profile, run = profile_run
    out = run.outputs
    assert out["namespace"] == APP_NS
    for service in SERVICES:
        assert out["images"][service] == run.container(service)["image"]
        port = PORTS[service][1]
        assert out["services"][service] == {
            "name": service,
            "namespace": APP_NS,
            "port": port,
            "address": f"{service}.{APP_NS}.svc:{port}",
        }
    assert out["consul"] == {
        "httpAddr": "http://consul-server.consul.svc:8500",
        "namespace": "consul",
        "uiService": "consul-ui",
    }
    context = {"kind": "kind-consul-microservices", "minikube": "minikube", "existing": "prod"}
    exposed = {service.name for service in CATALOG if service.exposed}
    assert set(out["portForwards"]) == exposed
    books = out["portForwards"]["books-api"]
    assert f"--context {context[profile]} " in books
    assert f"-n {APP_NS} port-forward svc/books-api 8080:8080" in books
    assert books.endswith("# then curl http://localhost:8080/api/v1/resources/books")
    assert "-n consul port-forward svc/consul-ui 8500:80" in out["consulUiPortForward"]


def test_no_resource_is_registered_twice(profile_run):
    _, run = profile_run
    keys = [(r.typ, r.name) for r in run.resources]
    assert len(keys) == len(set(keys))


def test_local_chart_path_replaces_the_repository(tmp_path):
    chart = tmp_path / "consul-1.9.3.tgz"
    chart.write_bytes(b"")
    run = deploy(PROFILES["kind"] | {"consulChartPath": str(chart)})
    (release,) = run.of_type(RELEASE)
    assert release.inputs["chart"] == str(chart)
    assert "repositoryOpts" not in release.inputs
    assert release.inputs["version"] == "1.9.3"


@pytest.mark.parametrize("service", SERVICES)
def test_a_pod_going_away_drains_before_sigterm(profile_run, service):
    """A rollout under load: the old pod keeps serving while the Service stops sending to it, and
    still gets its manifest's grace after SIGTERM."""
    _, run = profile_run
    pod = run.deployment(service)["spec"]["template"]["spec"]
    drain = infra_module("microservice").DRAIN_SECONDS
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": drain}}}
    grace = CATALOG.services[service].termination_grace_seconds
    assert pod["terminationGracePeriodSeconds"] == drain + grace


def test_every_object_is_applied_under_the_programs_one_field_manager(profile_run):
    """Not the provider's random one per resource: an `up` killed after a create reached the
    cluster is redone by the next `up` as the same owner (tests/e2e/test_faults.py)."""
    _, run = profile_run
    cluster = infra_module("cluster")
    objects = [
        r for r in run.resources if r.typ.startswith("kubernetes:") and "metadata" in r.inputs
    ]
    assert len(objects) >= 15
    for resource in objects:
        annotations = resource.inputs["metadata"].get("annotations") or {}
        assert annotations.get(cluster.FIELD_MANAGER_ANNOTATION) == cluster.FIELD_MANAGER, (
            resource.typ,
            resource.name,
        )
