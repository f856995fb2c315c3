"""kind as a user runs it, on a machine without Docker: `make up CLUSTER=kind`, the stack answering,
a second `make up` that changes nothing, a pod no policy admits reaching nothing, one service's
change rolled out alone, and `make down CLUSTER=kind` leaving the host as it was.

kind runs here on podman (kind's podman provider) with the node image and registry image the
project builds from the toolchain (hack/kind-node.sh, infra/kind.sh). Every step goes through make
in a temporary copy of the repo, with its own kind cluster, kubeconfig, Pulumi backend and state
directory, so a developer's clusters and stacks are not touched. Two paths, each a full cycle:
- side: the images built and pushed by podman, Consul an agent on this host (no plugin, no chart);
- user: pulumi-docker builds and pushes in `up`, the chart installs Consul with ACLs, when the
  parts a user downloads are at hand (local_stack.user_path_parts), else skipped naming them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator

import local_stack
import pytest
import requests
from kind_support import KindRun, host_state, kind_run, why_not_here
from local_stack import (
    NAMESPACE,
    SERVICES,
    findings,
    python_host,
    timed,
    user_path_parts,
    wait_until,
)
from testkit import toolchain_bin_dir

pytestmark = pytest.mark.e2e

CLUSTER = "consul-microservices-e2e"
CONTEXT = f"kind-{CLUSTER}"
# Apart from a developer's kind cluster (10.245.0.0/16) and the local cluster (10.244.0.0/16).
POD_SUBNET = "10.246.0.0/16"


@pytest.fixture(scope="module", params=["side", "user"])
def kind(request, workdir, timings) -> Iterator[KindRun]:
    """A repo copy, and the environment of its make runs: `make down` at the end in any case."""
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    if request.param == "user":
        _, missing = user_path_parts()
        if missing:
            pytest.skip("user path on kind skipped: " + "; ".join(missing))
    with kind_run(workdir / f"kind-{request.param}", request.param, CLUSTER, POD_SUBNET) as run:
        yield run


def port_forward(kind: KindRun, service: str, port: int):
    """`kubectl port-forward svc/<service>` on the run's cluster, as make up prints it."""
    kubectl = [str(toolchain_bin_dir() / "kubectl"), "--kubeconfig", str(kind.kubeconfig),
               "--context", CONTEXT]  # fmt: skip
    return local_stack.port_forward(kubectl, service, port)


def greeting(url: str, name: str) -> requests.Response | bool:
    try:
        answer = requests.get(f"{url}/api/v1/greeting", params={"name": name}, timeout=10)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and answer


def deployed_images(kind: KindRun) -> dict[str, set[str]]:
    images: dict[str, set[str]] = {service: set() for service in SERVICES}
    for pod in kind.json("-n", NAMESPACE, "get", "pods")["items"]:
        name = pod["metadata"]["labels"].get("app.kubernetes.io/name")
        if name in images and not pod["metadata"].get("deletionTimestamp"):
            images[name] |= {c["image"] for c in pod["spec"]["containers"]}
    return images


def test_1_make_up_creates_kind_on_podman_and_deploys(kind, timings):
    with timed(timings, f"kind {kind.path}: make up CLUSTER=kind (cold)"):
        output = kind.make("up", "CLUSTER=kind")
    assert "kind on podman" in output, output
    assert f"--context {CONTEXT} -n {NAMESPACE} port-forward svc/books-api" in output, output
    # The policy pack ran under the engine where a language host can run it, and found nothing.
    if python_host()[0] is not None:
        assert "policy: skipped" not in output
        assert "consul-microservices@v0.1.0" in output and findings(output) == [], output
    else:
        assert "policy: skipped" in output
    node = f"{CLUSTER}-control-plane"
    image = subprocess.run(
        ["podman", "inspect", node, "--format", "{{.ImageName}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert image.startswith("localhost/consul-microservices/kind/node:"), image
    for service in SERVICES:
        kind.kubectl(
            "-n", NAMESPACE, "rollout", "status", f"deployment/{service}", "--timeout=300s"
        )  # fmt: skip
    if kind.path == "user":
        pods = kind.json("-n", "consul", "get", "pods", "-l", "app=consul,component=server")
        assert pods["items"], "the chart's Consul server"


def test_2_a_greeting_through_the_printed_port_forward_comes_from_consul(kind):
    for name in ("books-api", "example-service"):
        wait_until(lambda n=name: len(kind.passing(n)) == 2, timeout=180,
                   what=f"2 passing {name} instances in Consul")  # fmt: skip
    greeters = {
        f"{e['Service']['Address']}:{e['Service']['Port']}" for e in kind.passing("example-service")
    }
    with port_forward(kind, "books-api", 8080) as url:
        answer = wait_until(lambda: greeting(url, "kind"), timeout=60, what="a greeting")
        books = requests.get(f"{url}/api/v1/resources/books", timeout=10).json()["books"]
    assert answer.json()["message"] == "Hello, kind!"
    assert answer.json()["instance"] in greeters
    assert [book["id"] for book in books[:2]] == [1, 2]


def test_2b_prometheus_counts_each_services_requests(kind):
    """The stack's Prometheus scrapes every service's pods on kind's nodes: a load of greetings
    and listings through the printed port-forward shows in its counts, per service."""
    kind.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/prometheus", "--timeout=300s")
    with port_forward(kind, "prometheus", 9090) as prometheus:
        before = local_stack.first_scrape(prometheus)
        with port_forward(kind, "books-api", 8080) as url:
            greetings = sum(bool(greeting(url, f"load-{i}")) for i in range(30))
            books = f"{url}/api/v1/resources/books"
            listings = sum(requests.get(books, timeout=10).status_code == 200 for _ in range(30))
        assert (greetings, listings) == (30, 30)
        local_stack.wait_counted(prometheus, before, {"books-api": 60, "greeter": 30})


def podman_builds(make_output: str) -> list[str]:
    """The images hack/local-stack.sh built and pushed in one `make up` (the side path's podman)."""
    return re.findall(r"podman build and push \S+/([\w-]+):", make_output)


def test_3_a_second_make_up_changes_nothing(kind, timings):
    with timed(timings, f"kind {kind.path}: make up CLUSTER=kind (no-op)"):
        output = kind.make("up", "CLUSTER=kind", "UP_FLAGS=--expect-no-changes")
    assert podman_builds(output) == [], "the registry has every unchanged build"


# Each target a TCP connect away: "open", or why not (a NetworkPolicy drops: "timed out").
PROBE = """
import json, socket, sys
found = {}
for target in json.loads(sys.argv[1]):
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=4):
            found[target] = "open"
    except OSError as error:
        found[target] = type(error).__name__ + ": " + str(error)
print(json.dumps(found))
"""


def probe(kind: KindRun, pod: str, targets: list[str]) -> dict[str, str]:
    done = kind.kubectl(
        "-n", NAMESPACE, "exec", pod, "--", "python", "-c", PROBE, json.dumps(targets)
    )  # fmt: skip
    return json.loads(done.stdout)


def test_4_a_pod_that_no_policy_admits_reaches_nothing(kind):
    books_pod = kind.json("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=books-api")
    books_pod = books_pod["items"][0]
    api = kind.json("-n", "default", "get", "endpoints", "kubernetes")["subsets"][0]
    targets = [
        f"greeter.{NAMESPACE}.svc:50051",
        f"books-api.{NAMESPACE}.svc:8080",
        kind.consul_address(),
        "kubernetes.default.svc:443",
        f"{api['addresses'][0]['ip']}:{api['ports'][0]['port']}",
        f"prometheus.{NAMESPACE}.svc:9090",
        f"{books_pod['status']['podIP']}:9102",  # its metrics port: Prometheus's alone
    ]
    image = books_pod["spec"]["containers"][0]["image"]
    overrides = {
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "intruder", "image": image, "command": ["sleep", "600"],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        }
    }  # fmt: skip
    kind.kubectl(
        "-n", NAMESPACE, "run", "intruder", "--image", image, "--restart=Never",
        "--labels", "app.kubernetes.io/name=intruder", "--overrides", json.dumps(overrides),
    )  # fmt: skip
    try:
        kind.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/intruder",
                     "--timeout=120s")  # fmt: skip
        found = probe(kind, "intruder", targets)
        assert "open" not in found.values(), found
        # The same probe from books-api: the flows its policies allow are open (the probe works).
        allowed = probe(kind, books_pod["metadata"]["name"], [targets[0], targets[2]])
        assert set(allowed.values()) == {"open"}, allowed
    finally:
        kind.kubectl("-n", NAMESPACE, "delete", "pod", "intruder", "--wait=false", check=False)


def test_5_a_change_to_the_greeter_rolls_out_the_greeter_alone(kind, timings):
    before = deployed_images(kind)
    server = kind.repo / "services" / "greeter" / "src" / "greeter" / "server.py"
    server.write_text(server.read_text() + "# e2e on kind: a one-line change in the greeter\n")
    with timed(timings, f"kind {kind.path}: make up CLUSTER=kind (greeter changed)"):
        output = kind.make("up", "CLUSTER=kind")
        kind.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/greeter", "--timeout=300s")
    wait_until(lambda: len(deployed_images(kind)["greeter"]) == 1, timeout=120,
               what="the old greeter pods gone")  # fmt: skip
    after = deployed_images(kind)
    assert after["greeter"] != before["greeter"], after
    assert after["books-api"] == before["books-api"], (before, after)
    assert podman_builds(output) == ([] if kind.path == "user" else ["greeter"]), output
    with port_forward(kind, "books-api", 8080) as url:
        assert wait_until(lambda: greeting(url, "again"), timeout=90, what="a greeting")


def test_6_make_down_leaves_the_host_as_it_found_it(kind, timings):
    with timed(timings, f"kind {kind.path}: make down CLUSTER=kind"):
        kind.make("down", "CLUSTER=kind", timeout=900)
    deadline = time.monotonic() + 30  # podman's conmon releases a network a moment after rm
    while host_state() != kind.before and time.monotonic() < deadline:
        time.sleep(1)
    assert host_state() == kind.before
