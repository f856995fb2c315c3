"""The program's Prometheus (prometheusInstall): on in the local stacks, off by default.

One scrape job per service of the catalog, on its pods' metrics port; the flows scraping needs and
nothing more (the metrics ports from Prometheus alone, the API server for discovery, Consul's UI
in chart mode); a Role that lists the app namespace's pods and nothing else; bad keys fail first.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from infra_harness import (
    CATALOG,
    DEPLOYMENT,
    KUBERNETES_API,
    NETPOL,
    PROFILES,
    RELEASE,
    SECRET_KEYS,
    SERVICES,
    Deployment,
    RecordingMocks,
    deploy,
    project_defaults,
    stack_config,
)
from network_eval import APP_NS, Conn, Pod, allowed

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
LOCAL_STACKS = ("dev", "local", "minikube")  # Pulumi.<stack>.yaml: kind, the local node, minikube
METRICS = {service.name: service.metrics_port for service in CATALOG}
PORTS = {service.name: service.port for service in CATALOG}

PROMETHEUS = Pod("prometheus", APP_NS, {"app.kubernetes.io/name": "prometheus"}, "10.244.0.40")
PODS = {
    name: Pod(name, APP_NS, {"app.kubernetes.io/name": name}, f"10.244.0.{10 + i}")
    for i, name in enumerate(SERVICES)
}
STRAY = Pod("stray", APP_NS, {"app.kubernetes.io/name": "debug"}, "10.244.0.12")
OUTSIDER = Pod("client", "default", {"run": "curl"}, "10.244.0.30")
CONSUL = Pod(
    "consul-server", "consul", {"app": "consul", "component": "server", "release": "consul"},
    "10.244.0.20",
)  # fmt: skip
KUBE_API = Pod("kube-apiserver", "", {}, KUBERNETES_API["address"])


@pytest.fixture(scope="module")
def on() -> Deployment:
    return deploy(PROFILES["kind"])


def _scrape_config(run: Deployment) -> dict:
    return json.loads(run.one(CONFIG_MAP, "prometheus-config").inputs["data"]["prometheus.yml"])


def _consul_values(run: Deployment) -> dict:
    return run.one(RELEASE, "consul").inputs["values"]


@pytest.mark.parametrize("stack", LOCAL_STACKS)
def test_the_local_stacks_turn_it_on_and_prod_leaves_it_off(stack):
    assert stack_config(stack)["prometheusInstall"] == "true"
    assert stack_config("prod")["prometheusInstall"] == "false"


def test_off_by_default_nothing_of_it_is_registered_or_open():
    run = deploy(project_defaults(), SECRET_KEYS)
    names = {resource.name for resource in run.resources}
    assert not {name for name in names if name.startswith("prometheus")}
    assert "metrics" not in _consul_values(run)["ui"]
    for name in SERVICES:
        assert not allowed(run, Conn(PROMETHEUS, PODS[name], METRICS[name]))
    assert run.outputs["prometheus"] is None
    assert "prometheusInstall is false" in run.outputs["prometheusPortForward"]


def test_one_job_per_service_finds_its_pods_metrics_port_in_the_app_namespace(on):
    config = _scrape_config(on)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == sorted(SERVICES)
    for name, job in jobs.items():
        (discovery,) = job["kubernetes_sd_configs"]
        assert discovery["role"] == "pod"
        assert discovery["namespaces"] == {"names": [APP_NS]}
        assert discovery["selectors"] == [
            {"role": "pod", "label": f"app.kubernetes.io/name={name}"}
        ]
        keep = job["relabel_configs"][0]
        assert keep == {
            "action": "keep",
            "regex": "metrics",
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        }


def test_the_services_name_their_metrics_port_as_the_jobs_keep_it(on):
    for name in SERVICES:
        ports = on.container(name)["ports"]
        assert {"name": "metrics", "containerPort": METRICS[name]} in ports


def test_a_config_change_rolls_the_pod(on):
    """Prometheus reads its config at start: the pod template carries the config's hash."""
    text = on.one(CONFIG_MAP, "prometheus-config").inputs["data"]["prometheus.yml"]
    template = on.one(DEPLOYMENT, "prometheus-deployment").inputs["spec"]["template"]
    annotation = template["metadata"]["annotations"]["consul-microservices/prometheus-config"]
    assert annotation == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_server_is_locked_down_and_gets_only_a_short_lived_token(on):
    deployment = on.one(DEPLOYMENT, "prometheus-deployment").inputs
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("docker.io/prom/prometheus:v3.5.0@sha256:")
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65534
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    (token,) = [v for v in pod["volumes"] if v["name"] == "token"]
    sources = token["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--storage.tsdb.retention.time=1d" in container["args"]


def test_its_role_lists_the_app_namespaces_pods_and_nothing_else(on):
    role = on.one(ROLE, "prometheus-role").inputs
    assert role["metadata"]["namespace"] == APP_NS
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    binding = on.one(ROLE_BINDING, "prometheus-rolebinding").inputs
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus", "namespace": APP_NS}
    ]


def test_it_reaches_each_metrics_port_and_nothing_else_of_the_services(on):
    for name in SERVICES:
        assert allowed(on, Conn(PROMETHEUS, PODS[name], METRICS[name]))
        assert not allowed(on, Conn(PROMETHEUS, PODS[name], PORTS[name]))
        assert not allowed(on, Conn(STRAY, PODS[name], METRICS[name]))
        assert not allowed(on, Conn(OUTSIDER, PODS[name], METRICS[name]))
    assert allowed(on, Conn(PROMETHEUS, KUBE_API, KUBERNETES_API["port"]))
    assert not allowed(on, Conn(PROMETHEUS, CONSUL, 8500))
    assert not allowed(on, Conn(PROMETHEUS, OUTSIDER, 80))


def test_consuls_ui_shows_its_metrics_through_the_servers(on):
    metrics = _consul_values(on)["ui"]["metrics"]
    assert metrics == {
        "enabled": True,
        "provider": "prometheus",
        "baseURL": f"http://prometheus.{APP_NS}.svc:9090",
    }
    assert allowed(on, Conn(CONSUL, PROMETHEUS, 9090))
    assert not allowed(on, Conn(OUTSIDER, PROMETHEUS, 9090))
    assert not allowed(on, Conn(PODS[SERVICES[0]], PROMETHEUS, 9090))
    assert on.outputs["prometheus"] == {"address": f"http://prometheus.{APP_NS}.svc:9090"}
    assert "port-forward svc/prometheus 9090:9090" in on.outputs["prometheusPortForward"]


def test_without_consuls_ui_nobody_may_query_it():
    run = deploy(PROFILES["kind"] | {"consulUi": "false"})
    assert "metrics" not in _consul_values(run)["ui"]
    assert not allowed(run, Conn(CONSUL, PROMETHEUS, 9090))
    policy = run.one(NETPOL, "prometheus-netpol").inputs["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert not policy.get("ingress")


def test_a_mirror_replaces_the_image():
    mirror = "localhost:5001/prom/prometheus@sha256:" + "ab" * 32
    run = deploy(PROFILES["kind"] | {"prometheusImage": mirror})
    container = run.one(DEPLOYMENT, "prometheus-deployment").inputs["spec"]["template"]
    assert container["spec"]["containers"][0]["image"] == mirror


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"prometheusImage": "localhost:5001/prom/prometheus@sha256:" + "ab" * 32},
            "consul-microservices:prometheusImage: got 'localhost:5001/prom/prometheus@sha256:"
            + "ab" * 32
            + "', expected empty while prometheusInstall is false",
        ),
        (
            {"prometheusInstall": "true", "prometheusImage": "prom/prometheus:latest"},
            "consul-microservices:prometheusImage: got 'prom/prometheus:latest', expected",
        ),
        ({"prometheusInstall": "yes"}, "consul-microservices:prometheusInstall: got 'yes'"),
    ],
    ids=["image without install", "unpinned image", "not a flag"],
)
def test_bad_keys_fail_before_any_resource(config, message):
    mocks = RecordingMocks()
    with pytest.raises(Exception, match="invalid stack configuration") as failure:
        deploy(project_defaults() | config, mocks=mocks)
    assert message in str(failure.value)
    assert not mocks.resources
