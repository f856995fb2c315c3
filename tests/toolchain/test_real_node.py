"""The local cluster's real node (hack/node.sh): the project's images run as real containers.

One cluster with a real node for the module (a real node is one per host). The images are built by
podman and pushed to the node's registry, localhost:5001; every pod pulls them from there by digest,
as a kind node pulls from kind's local registry.
"""

import json
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest
from testkit import ROOT, running_cluster, wait_until

pytestmark = [pytest.mark.toolchain, pytest.mark.timeout(900)]  # image builds on a cold machine

REGISTRY = "localhost:5001"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # pip behind this machine's TLS proxy
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}


@pytest.fixture(scope="module")
def node_cluster():
    state_dir = Path(tempfile.mkdtemp(prefix="consul-microservices-node-"))
    try:
        with running_cluster(state_dir, node="real") as kube:
            yield kube
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def images(node_cluster, tmp_path_factory) -> dict[str, str]:
    """Both services built by podman and pushed: service -> `localhost:5001/…@sha256:…`."""
    engine = ROOT / "hack" / "container-engine.sh"
    base = subprocess.run(
        [str(engine), "base-image"], capture_output=True, text=True, check=True, timeout=900
    ).stdout.strip()
    context = tmp_path_factory.mktemp("context") / "services"
    shutil.copytree(ROOT / "services", context, ignore=shutil.ignore_patterns(".offline"))
    args = ["--build-arg", f"BASE_IMAGE={base}"]
    if CA_BUNDLE.is_file():
        (context / ".offline").mkdir()
        shutil.copy(CA_BUNDLE, context / ".offline" / "ca.pem")
        args += ["--build-arg", "PIP_CA_BUNDLE=.offline/ca.pem"]
    pushed = {}
    for service in ("books-api", "greeter"):
        name = f"{REGISTRY}/consul-microservices-node-test/{service}"
        build = ["build", "--quiet", *args, "--build-arg", f"SERVICE={service}"]
        build += ["-f", str(context / service / "Dockerfile"), "--tag", f"{name}:test"]
        podman(*build, str(context), timeout=900)
        digest_file = context.parent / f"{service}.digest"
        podman("push", "--quiet", "--tls-verify=false", "--digestfile", str(digest_file),
               f"{name}:test")  # fmt: skip
        pushed[service] = f"{name}@{digest_file.read_text().strip()}"
    return pushed


@pytest.fixture
def namespace(node_cluster, request):
    """A fresh namespace per test under Pod Security `restricted`, deleted afterwards."""
    name = request.node.name.replace("_", "-").lower()[:50].rstrip("-")
    node_cluster.kubectl("create", "namespace", name)
    node_cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    wait_until(
        lambda: (
            node_cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0
        ),
        timeout=30,
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    node_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def restricted_pod(name: str, image: str, labels: dict, **container) -> dict:
    """A pod as the program makes them: uid 10001, read-only root, an emptyDir /tmp."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    **container,
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def books_api_pod(name: str, image: str, greeter_addr: str = "", ready_path: str = "/readyz"):
    env = [{"name": "GREETER_ADDR", "value": greeter_addr}] if greeter_addr else []
    return restricted_pod(
        name,
        image,
        {"app": name},
        env=env,
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": ready_path, "port": "http"}, "periodSeconds": 1},
    )


def greeter_pod(name: str, image: str) -> dict:
    return restricted_pod(
        name,
        image,
        {"app": "greeter"},
        ports=[{"name": "grpc", "containerPort": 50051}],
        readinessProbe={"grpc": {"port": 50051}, "periodSeconds": 1},
    )


def apply(kube, namespace: str, *objects: dict) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps({"kind": "List",
                 "apiVersion": "v1", "items": list(objects)}))  # fmt: skip


def pod(kube, namespace: str, name: str) -> dict:
    return json.loads(kube.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout)


def is_ready(kube, namespace: str, name: str) -> bool:
    conditions = pod(kube, namespace, name)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_ready(kube, namespace: str, *names: str, timeout: float = 120) -> None:
    for name in names:
        wait_until(lambda n=name: is_ready(kube, namespace, n), timeout, f"pod {name} Ready")


def exec_python(kube, namespace: str, pod_name: str, code: str, check: bool = True):
    return kube.kubectl(
        "-n", namespace, "exec", pod_name, "--", "python", "-c", textwrap.dedent(code), check=check
    )


def test_pod_pulls_by_digest_and_is_ready_only_through_its_readiness_probe(
    node_cluster, images, namespace
):
    apply(
        node_cluster,
        namespace,
        books_api_pod("books-api", images["books-api"]),
        books_api_pod("books-api-wrong-probe", images["books-api"], ready_path="/no-such-path"),
    )
    wait_ready(node_cluster, namespace, "books-api")
    status = pod(node_cluster, namespace, "books-api")["status"]["containerStatuses"][0]
    assert status["imageID"].endswith(images["books-api"].split("@")[1])
    assert status["ready"] and status["restartCount"] == 0
    # Same image, same container, a probe that gets 404: the kubelet's real probe keeps it unready.
    wrong = pod(node_cluster, namespace, "books-api-wrong-probe")["status"]
    assert wrong["containerStatuses"][0]["state"].get("running")
    assert not is_ready(node_cluster, namespace, "books-api-wrong-probe")


def test_failing_liveness_probe_restarts_the_container(node_cluster, images, namespace):
    probe = {"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 1}
    apply(
        node_cluster,
        namespace,
        restricted_pod("dead", images["books-api"], {"app": "dead"}, livenessProbe=probe),
    )

    def restarted():
        statuses = pod(node_cluster, namespace, "dead")["status"].get("containerStatuses", [])
        return statuses and statuses[0]["restartCount"] >= 1

    wait_until(restarted, timeout=120, what="a restart by the failing liveness probe")


def test_restricted_pod_runs_as_10001_with_read_only_root_and_writable_tmp(
    node_cluster, images, namespace
):
    apply(node_cluster, namespace, greeter_pod("greeter", images["greeter"]))
    wait_ready(node_cluster, namespace, "greeter")
    out = exec_python(
        node_cluster,
        namespace,
        "greeter",
        """
        import os
        print(os.getuid(), os.getgid())
        open("/tmp/probe", "w").write("ok")
        try:
            open("/probe", "w")
        except OSError as err:
            print("root:", err.strerror)
        print([line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")])
        """,
    ).stdout.splitlines()
    assert out == ["10001 10001", "root: Read-only file system", "['0000000000000000']"]


def test_books_api_reaches_greeter_through_cluster_ip_and_dns_name(node_cluster, images, namespace):
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "greeter"},
        "spec": {"selector": {"app": "greeter"}, "ports": [{"port": 50051, "name": "grpc"}]},
    }
    apply(node_cluster, namespace, greeter_pod("greeter", images["greeter"]), service)
    wait_ready(node_cluster, namespace, "greeter")  # its native gRPC probe passed
    cluster_ip = node_cluster.kubectl(
        "-n", namespace, "get", "service", "greeter", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    apply(
        node_cluster,
        namespace,
        books_api_pod("via-ip", images["books-api"], f"{cluster_ip}:50051"),
        books_api_pod("via-dns", images["books-api"], f"greeter.{namespace}.svc:50051"),
    )
    wait_ready(node_cluster, namespace, "via-ip", "via-dns")
    for name in ("via-ip", "via-dns"):
        out = exec_python(
            node_cluster,
            namespace,
            name,
            """
            import json, urllib.request
            url = "http://127.0.0.1:8080/api/v1/greeting?name=node"
            print(json.load(urllib.request.urlopen(url, timeout=10))["message"])
            """,
        )
        assert out.stdout.strip() == "Hello, node!", name


def connects(kube, namespace: str, client: str, address: str) -> bool:
    code = f"""
        import socket
        try:
            socket.create_connection(("{address}", 50051), timeout=3).close()
            print("open")
        except OSError as err:
            print("refused:", err)
        """
    return exec_python(kube, namespace, client, code).stdout.startswith("open")


def test_network_policy_denies_and_then_allows_a_real_connection(node_cluster, images, namespace):
    apply(
        node_cluster,
        namespace,
        greeter_pod("greeter", images["greeter"]),
        restricted_pod("client", images["books-api"], {"app": "client"}),
    )
    wait_ready(node_cluster, namespace, "greeter")
    wait_until(
        lambda: pod(node_cluster, namespace, "client")["status"].get("phase") == "Running",
        timeout=120,
        what="client running",
    )
    greeter_ip = pod(node_cluster, namespace, "greeter")["status"]["podIP"]
    assert connects(node_cluster, namespace, "client", greeter_ip)

    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "greeter-deny"},
        "spec": {"podSelector": {"matchLabels": {"app": "greeter"}}, "policyTypes": ["Ingress"]},
    }
    apply(node_cluster, namespace, deny)
    wait_until(
        lambda: not connects(node_cluster, namespace, "client", greeter_ip),
        timeout=30,
        what="the deny policy to take effect",
    )

    allow = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "greeter-allow-client"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "greeter"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"port": 50051, "protocol": "TCP"}],
                }
            ],
        },
    }
    apply(node_cluster, namespace, allow)
    wait_until(
        lambda: connects(node_cluster, namespace, "client", greeter_ip),
        timeout=30,
        what="the allow policy to take effect",
    )
