"""The real engine's sequence on the local cluster: preview, up, no-op preview, one-service change,
destroy, and no plaintext secret in the state. The steps run in file order on one stack.

What it proves beyond the mock tests, on the local cluster's real node: the API server (with Pod
Security admission) accepts every object; the pods pull the pushed digests from the registry
localhost:5001, pass their real probes, register in Consul and find each other through it; the
engine's diff of a second run is empty; and a change in one service's source moves exactly that
Deployment. What this side path does not prove: a Docker provider build (images are built and
pushed outside Pulumi, see local_stack) and the Consul chart (a Consul agent outside the cluster,
on the node's address, stands in).
"""

from __future__ import annotations

import base64
import json
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from local_stack import (
    CONSUL_NAMES,
    IMAGE_REPO,
    NAMESPACE,
    NODE_IP,
    POLICY_PACK,
    ROOT,
    SERVICES,
    LocalStack,
    Pulumi,
    changed,
    findings,
    first_scrape,
    port_forward,
    registry_digest,
    timed,
    urn_key,
    wait_counted,
    wait_until,
)
from testkit import toolchain_bin_dir as bin_dir

sys.path.insert(0, str(ROOT / "tests" / "infra"))
sys.path.insert(0, str(ROOT / "tests" / "services"))
from infra_harness import DEPLOYMENT, SECRET_KEYS, deploy, stack_config
from services_support import OtlpReceiver

pytestmark = pytest.mark.e2e
GREETER_DEPLOYMENT = (DEPLOYMENT, "greeter-deployment")
STACK_ROOT = ("pulumi:pulumi:Stack", "consul-microservices-local")


@pytest.fixture(scope="module")
def collector(cluster):
    """A real OTLP receiver where the pods reach this machine (the node's address): the stack's
    trace collector (otlpEndpoint)."""
    with OtlpReceiver(NODE_IP) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(repo, cluster, images, node_consul, postgres_image, prometheus_image, workdir, collector):  # noqa: PLR0917
    local = LocalStack(repo, Pulumi(repo, workdir / "pulumi-home"), cluster)
    local.init(node_consul, images, postgres_image, prometheus_image)
    local.pulumi.config_set("otlpEndpoint", collector.endpoint)
    yield local
    # A failed step must not leave objects behind; after a passed destroy this is a no-op.
    local.pulumi("destroy", "--yes", "--skip-preview", check=False)


def _mock_run_keys(
    local: LocalStack, consul: str, images: dict[str, str], postgres_image: str,
    prometheus_image: str,
) -> set:  # fmt: skip
    """(type, name) of everything the same config registers under Pulumi's mocks."""
    config = stack_config("local") | {
        "kubeconfig": str(local.cluster.kubeconfig),
        "consulInstall": "false",
        "consulAddress": f"http://{consul}",
        "consulExternalCidr": f"{NODE_IP}/32",
        "imageRegistry": IMAGE_REPO,
        "registryUsername": local.registry_user,
        "registryPassword": local.registry_password,
        "postgresImage": postgres_image,
        "prometheusImage": prometheus_image,
    }
    config |= {"services": json.dumps({svc: {"image": ref} for svc, ref in images.items()})}
    return {urn_key(urn) for urn in deploy(config, SECRET_KEYS).urns}


def _deployment(local: LocalStack, service: str) -> dict:
    return local.kubectl_json("-n", NAMESPACE, "get", "deployment", service)


def _rolled_out(deployment: dict) -> bool:
    spec, status = deployment["spec"], deployment.get("status", {})
    return (
        status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
        and status.get("replicas") == spec["replicas"]
    )


def _ready_endpoints(local: LocalStack, service: str) -> int:
    slices = local.kubectl_json(
        "-n", NAMESPACE, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    return len([e for s in slices for e in s.get("endpoints") or [] if e["conditions"]["ready"]])


def _pods_images(local: LocalStack, service: str) -> set[str]:
    pods = local.kubectl_json(
        "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/name={service}"
    )["items"]
    return {c["image"] for p in pods for c in p["spec"]["containers"]}


def test_1_preview_lists_the_expected_creates(  # noqa: PLR0917 - fixtures
    stack, node_consul, images, postgres_image, prometheus_image, timings
):
    with timed(timings, "pulumi preview (empty stack)"):
        steps = stack.pulumi.preview_steps()
    creates = {urn_key(s["urn"]) for s in steps if s["op"] == "create"}
    reads = {urn_key(s["urn"]) for s in steps if s["op"] == "read"}
    assert {s["op"] for s in steps} == {"create", "read"}
    # The one object read, not made: the API server's endpoints, Prometheus's flow to them.
    assert reads == {("kubernetes:discovery.k8s.io/v1:EndpointSlice", "kubernetes-api")}
    # The engine plans exactly what the program registers under mocks with the same config (the
    # mocks' root stack resource is not a registration) ...
    expected = _mock_run_keys(stack, node_consul, images, postgres_image, prometheus_image)
    assert (creates | reads) - {STACK_ROOT} == expected
    # ... and that is both services' full set, the namespace and the pull secret, no image build.
    for service in SERVICES:
        for typ, suffix in [
            ("kubernetes:core/v1:ServiceAccount", "sa"),
            (DEPLOYMENT, "deployment"),
            ("kubernetes:core/v1:Service", "service"),
            ("kubernetes:policy/v1:PodDisruptionBudget", "pdb"),
            ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "netpol"),
        ]:
            assert (typ, f"{service}-{suffix}") in creates
    assert ("kubernetes:core/v1:Namespace", f"ns-{NAMESPACE}") in creates
    assert ("kubernetes:core/v1:Secret", "registry-credentials") in creates
    assert not [key for key in creates if key[0].startswith("docker:")]


def test_2_up_makes_deployments_available_behind_services_in_a_restricted_namespace(
    stack, images, timings
):
    with timed(timings, "pulumi up (create)"):
        stack.pulumi("up", "--yes", "--skip-preview")
    namespace = stack.kubectl_json("get", "namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for service in SERVICES:
        deployment = _deployment(stack, service)
        assert _rolled_out(deployment), deployment.get("status")
        conditions = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
        assert conditions["Available"] == "True"
        assert _pods_images(stack, service) == {images[service]}
        # The EndpointSlice controller catches up with the Deployment's Available shortly after.
        wait_until(
            lambda s=service, n=deployment["spec"]["replicas"]: _ready_endpoints(stack, s) == n,
            timeout=30,
            what=f"{service}'s Service to have a ready endpoint per replica",
        )
    # "restricted" is enforced, not only labelled: the API server refuses a privileged pod.
    refused = stack.cluster.kubectl(
        "-n", NAMESPACE, "run", "privileged", "--image", images["greeter"], "--privileged",
        "--dry-run=server", check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    assert stack.pulumi.outputs()["images"] == images


def test_2b_pods_run_the_pushed_digests_and_find_each_other_through_consul(stack, node_consul):
    """Real pods on the real node: what the registry holds is what runs, both services register
    with Consul from their pods, and books-api's greeting reaches a greeter that Consul named."""
    for service in SERVICES:
        for image in _pods_images(stack, service):
            assert registry_digest(image) == image.rsplit("@", 1)[1], image
        replicas = _deployment(stack, service)["spec"]["replicas"]
        name = CONSUL_NAMES[service]
        wait_until(
            lambda n=name, r=replicas: len(_passing(node_consul, n)) == r,
            timeout=90,
            what=f"{replicas} passing {name} instances in Consul",
        )
    greeter_addresses = {
        f"{entry['Service']['Address']}:{entry['Service']['Port']}"
        for entry in _passing(node_consul, "example-service")
    }
    pod_ips = {
        pod["status"]["podIP"]
        for pod in stack.kubectl_json(
            "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=greeter"
        )["items"]
    }
    assert {address.rsplit(":", 1)[0] for address in greeter_addresses} == pod_ips
    service = stack.kubectl_json("-n", NAMESPACE, "get", "service", "books-api")
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    # books-api's watch of Consul (a blocking query) sees the instances within its wait at most.
    answer = wait_until(
        lambda: (r := _greeting(url)) is not None and r.status_code == 200 and r,
        timeout=40,
        what="a greeting through books-api's Service",
    )
    assert answer.json() == {"message": "Hello, e2e!", "instance": answer.json()["instance"]}
    assert answer.json()["instance"] in greeter_addresses


def test_2d_a_sampled_greeting_is_one_trace_across_both_pods(stack, collector):
    """The stack names a collector: both services' pods export to it, through their one egress
    flow to it, and a greeting whose caller marks it sampled (W3C traceparent) is one trace:
    books-api's request span, its call to the greeter under it, the greeter's span under that."""
    trace_id = secrets.token_hex(16)
    service = stack.kubectl_json("-n", NAMESPACE, "get", "service", "books-api")
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    answer = requests.get(
        f"{url}/api/v1/greeting",
        params={"name": "trace"},
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text

    def spans(service: str, name: str) -> list:
        return collector.received(
            lambda s: (s.trace_id, s.service, s.name) == (trace_id, service, name)
        )

    greeting = "ExampleService/GetServerResponse"
    (request,) = wait_until(lambda: spans("books-api", "GET /api/v1/greeting"), timeout=60,
                            what="books-api's request span at the collector")  # fmt: skip
    served = wait_until(lambda: spans("greeter", greeting), timeout=60, what="the greeter's span")
    calls = {call.span_id: call for call in spans("books-api", greeting)}
    assert {calls[s.parent_span_id].parent_span_id for s in served} == {request.span_id}


def test_2e_prometheus_counts_the_requests_each_service_serves_under_load(stack):
    """The stack's Prometheus finds every service's pods through the API server and scrapes
    their metrics ports, through the flows the program opens: under a load of greetings and
    listings through books-api's Service, its counts grow by at least that load, per service
    (the kubelet's probes left out, local_stack.served)."""
    kubectl = [str(bin_dir() / "kubectl"), "--kubeconfig", str(stack.cluster.kubeconfig)]
    deployment = _deployment(stack, "prometheus")
    assert _rolled_out(deployment), deployment.get("status")
    service = stack.kubectl_json("-n", NAMESPACE, "get", "service", "books-api")
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    with port_forward(kubectl, "prometheus", 9090) as prometheus:
        before = first_scrape(prometheus)
        greetings = listings = 0
        with ThreadPoolExecutor(8) as pool:
            for answer in pool.map(lambda _: _greeting(url), range(100)):
                greetings += answer is not None and answer.status_code == 200
            for answer in pool.map(
                lambda _: requests.get(f"{url}/api/v1/resources/books", timeout=10), range(100)
            ):
                listings += answer.status_code == 200
        assert (greetings, listings) == (100, 100)
        wait_counted(prometheus, before, {"books-api": 200, "greeter": 100})


def test_2c_books_are_kept_in_the_database_by_every_pod_and_across_its_restart(stack):
    """A POST through one books-api pod is listed by 20 GETs through the Service (both pods,
    one database), and is still there after the database pod is deleted and comes back."""
    pod_ip = stack.kubectl_json(
        "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=books-api"
    )["items"][0]["status"]["podIP"]
    created = requests.post(
        f"http://{pod_ip}:8080/api/v1/resources/books",
        json={"title": "Kept by PostgreSQL", "author": "e2e"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    book = created.json()
    service = stack.kubectl_json("-n", NAMESPACE, "get", "service", "books-api")
    books = f"http://{service['spec']['clusterIP']}:8080/api/v1/resources/books"
    assert all(book in requests.get(books, timeout=10).json()["books"] for _ in range(20))
    stack.cluster.kubectl("-n", NAMESPACE, "delete", "pod", "books-api-db-0", "--wait=true")
    stack.cluster.kubectl(
        "-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/books-api-db-0", "--timeout=180s"
    )
    wait_until(
        lambda: requests.get(f"{books}/{book['id']}", timeout=10).json() == book,
        timeout=60,
        what="the book, read back after the database pod's restart",
    )


def _greeting(url: str) -> requests.Response | None:
    try:
        return requests.get(f"{url}/api/v1/greeting", params={"name": "e2e"}, timeout=10)
    except requests.RequestException:
        return None


def _passing(consul: str, name: str) -> list[dict]:
    return requests.get(f"http://{consul}/v1/health/service/{name}?passing", timeout=5).json()


def test_3_second_run_changes_nothing(stack, engine, images, timings):
    with timed(timings, "rebuild both images (CI, no source change)"):
        rebuilt = {service: engine.build(stack.repo, service) for service in SERVICES}
    assert rebuilt == images  # same context, same digest: no new image
    with timed(timings, "pulumi preview --expect-no-changes"):
        stack.pulumi("preview", "--expect-no-changes")


PACK = ("--policy-pack", str(POLICY_PACK))
# What the program's own config can break, the policy that stops it, and its message. (A NodePort
# cannot be had through the config: the program refuses one for a service its manifest does not
# expose, and the pack allows one for a service it does; test_3c's program makes one.)
BROKEN_BY_CONFIG = [
    ("services.greeter.image", f"{IMAGE_REPO}/greeter:e2e", "images-pinned",
     f"Deployment 'greeter-deployment': container 'greeter': image is '{IMAGE_REPO}/greeter:e2e'; "
     "expected a digest"),
]  # fmt: skip


def test_3b_the_policy_pack_under_the_engine_passes_the_stack_and_stops_each_broken_promise(
    stack, policy_host, images, timings
):
    """The pack as `make up` runs it, under the real engine: the deployed stack passes with no
    finding; an update that breaks a promise fails on that policy's mandatory finding and changes
    nothing (the next preview, with the config restored, has nothing to do)."""
    pulumi = stack.pulumi.under(policy_host)
    with timed(timings, "pulumi preview --policy-pack (deployed stack)"):
        done = pulumi("preview", "--expect-no-changes", *PACK)
    assert findings(done.stdout) == [], done.stdout
    for key, value, policy, message in BROKEN_BY_CONFIG:
        pulumi.config_set(key, value, path=True)
        try:
            done = pulumi("up", "--yes", *PACK, check=False)
        finally:
            pulumi("config", "rm", "--path", key)
            stack.set_images(images)
        assert done.returncode != 0, done.stdout
        assert findings(done.stdout) == [("mandatory", policy)], done.stdout
        assert message in done.stdout
        pulumi("preview", "--expect-no-changes", *PACK)
    assert _pods_images(stack, "greeter") == {images["greeter"]}


@pytest.mark.parametrize(
    ("violation", "policy"),
    [
        ("missing-pdb", "deployments-disruption-budget"),
        ("privileged", "containers-not-privileged"),
        ("nodeport", "services-not-exposed"),
    ],
)
def test_3c_the_engine_refuses_what_the_program_never_does(  # noqa: PLR0917 - fixtures
    stack, policy_host, images, workdir, violation, policy
):
    """A Deployment no disruption budget selects, a privileged container, a NodePort Service of no
    exposed service: a small program of their own (tests/e2e/fixtures/policy_violations) fails its
    update on that policy's mandatory finding, and the cluster never gets the object."""
    program = workdir / "policy-violations"
    if not program.exists():
        shutil.copytree(ROOT / "tests" / "e2e" / "fixtures" / "policy_violations", program)
        project = program / "Pulumi.yaml"
        project.write_text(project.read_text().replace("../../../../.venv", str(ROOT / ".venv")))
    pulumi = Pulumi(program, workdir / "pulumi-home-violations").under(policy_host)
    if pulumi("stack", "select", "violations", check=False).returncode:
        pulumi("stack", "init", "violations")
    for key, value in {
        "kubeconfig": str(stack.cluster.kubeconfig),
        "namespace": NAMESPACE,
        "image": images["greeter"],
        "violation": violation,
    }.items():
        pulumi.config_set(key, value)
    done = pulumi("up", "--yes", *PACK, check=False)
    assert done.returncode != 0, done.stdout
    found = findings(done.stdout)
    assert ("mandatory", policy) in found, done.stdout
    assert {level for level, _ in found} == {"mandatory"}
    kind = "service" if violation == "nodeport" else "deployment"
    missing = stack.cluster.kubectl(
        "-n", NAMESPACE, "get", kind, f"violating-{violation}", check=False
    )  # fmt: skip
    assert "NotFound" in missing.stderr


def test_4_one_line_change_moves_only_that_image_and_its_deployment(stack, engine, images, timings):
    server = stack.repo / "services" / "greeter" / "src" / "greeter" / "server.py"
    server.write_text(server.read_text() + "# e2e: a one-line change in the greeter only\n")
    with timed(timings, "rebuild both images (greeter changed)"):
        rebuilt = {service: engine.build(stack.repo, service) for service in SERVICES}
    assert rebuilt["books-api"] == images["books-api"]
    assert rebuilt["greeter"] != images["greeter"]
    stack.set_images(rebuilt)
    books_generation = _deployment(stack, "books-api")["metadata"]["generation"]

    with timed(timings, "pulumi preview (greeter changed)"):
        steps = stack.pulumi.preview_steps()
    assert changed(steps) == {GREETER_DEPLOYMENT: "update"}
    with timed(timings, "pulumi up (greeter rollout)"):
        stack.pulumi("up", "--yes", "--skip-preview")

    greeter = wait_until(
        lambda: (d := _deployment(stack, "greeter")) and _rolled_out(d) and d,
        timeout=120,
        what="the greeter rollout",
    )
    assert greeter["spec"]["template"]["spec"]["containers"][0]["image"] == rebuilt["greeter"]
    wait_until(
        lambda: _pods_images(stack, "greeter") == {rebuilt["greeter"]},
        timeout=120,
        what="old greeter pods to go",
    )
    assert _deployment(stack, "books-api")["metadata"]["generation"] == books_generation
    assert stack.pulumi.outputs()["images"] == rebuilt


def test_4b_make_dev_rolls_out_each_save_of_the_greeter_and_nothing_else(stack, timings):
    """hack/dev.py, `make dev`'s loop: two successive saves of the greeter, each rebuilt by podman
    (this stack deploys images built outside Pulumi) and rolled out alone with `up --target`;
    books-api is neither rebuilt nor rolled; Ctrl-C leaves a stack a later `up` finds unchanged."""
    books = _deployment(stack, "books-api")
    env = {**stack.pulumi.env, "CLUSTER_DIR": str(stack.cluster.state_dir), "PYTHONUNBUFFERED": "1"}
    server = stack.repo / "services" / "greeter" / "src" / "greeter" / "server.py"
    loop = DevLoop(stack.repo, env)
    try:
        loop.next_line("watching")
        for edit in (1, 2):
            server.write_text(server.read_text() + f"# e2e: make dev, save {edit}\n")
            line = loop.next_line("serving in", "FAILED")
            assert "rolled out greeter (" in line, loop.output()
            assert "books-api" not in line
            seconds = float(re.search(r"serving in ([0-9.]+) s", line).group(1))
            timings[f"make dev: greeter save {edit} to serving (build, push, up)"] = seconds
            image = re.search(r"greeter \((\S+)\)", line).group(1)
            assert registry_digest(image) == image.rsplit("@", 1)[1]
            # Rolled out: the old pods are draining (preStop) and go within their grace.
            wait_until(
                lambda i=image: _pods_images(stack, "greeter") == {i},
                timeout=60,
                what="the old greeter pods to go",
            )
    finally:
        assert loop.interrupt() == 0, loop.output()
    assert "stopped; the stack stays as deployed" in loop.output()
    after = _deployment(stack, "books-api")
    assert after["metadata"]["generation"] == books["metadata"]["generation"]
    assert _pods_images(stack, "books-api") == {stack.pulumi.outputs()["images"]["books-api"]}
    stack.pulumi("preview", "--expect-no-changes")


class DevLoop:
    """hack/dev.py of the stack's repo copy, its output read line by line as it comes."""

    def __init__(self, repo, env) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(repo / "hack" / "dev.py"), "--stack", "local"],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, *wanted: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if any(word in line for word in wanted):
                return line
        output = self.output()
        raise AssertionError(f"no line with {wanted} from hack/dev.py in {timeout} s:\n{output}")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        time.sleep(0.2)  # the reader's last lines
        return code

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "\n".join(self.seen)


def test_5_state_holds_no_plaintext_secret(stack):
    state = stack.pulumi.state_text()
    assert "registry-credentials" in state  # the Secret and the secret config are in there ...
    assert '"ciphertext"' in state  # ... encrypted
    for form in stack.secret_forms():
        assert form not in state
    # The database's password, as the cluster has it: generated by the program, never in clear.
    secret = stack.kubectl_json("-n", NAMESPACE, "get", "secret", "books-api-db-credentials")
    password = base64.b64decode(secret["data"]["POSTGRES_PASSWORD"]).decode()
    assert len(password) >= 24
    assert password not in state


def test_6_destroy_removes_everything_and_the_namespace(stack, timings):
    with timed(timings, "pulumi destroy"):
        stack.pulumi("destroy", "--yes", "--skip-preview")
    gone = stack.cluster.kubectl("get", "namespace", NAMESPACE, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    left = stack.pulumi("stack", "export").stdout
    assert '"urn"' not in left
    for form in stack.secret_forms():
        assert form not in stack.pulumi.state_text()
