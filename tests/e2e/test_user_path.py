"""The user's path, on the real node: pulumi-docker builds and pushes, the Consul chart installs.

A stack as close to Pulumi.dev.yaml as this machine allows: `imageDelivery=push` through
`pulumi_docker.Image` over podman's Docker API into the node's registry localhost:5001, and
`consulInstall=true` from a local copy of the chart with its images mirrored by `hack/local-stack.sh
chart-images`, as `make up CLUSTER=local` does (a Consul server image built from the toolchain's
consul; the consul-k8s control-plane image as given). It runs when the
three parts a user downloads are at hand (local_stack.user_path_parts says which and how they are
found); otherwise the module skips, naming each missing part, and the run's header and summary
say so. The steps run in file order on one stack.
"""

from __future__ import annotations

import json

import pytest
import requests
from local_stack import (
    CONSUL_NAMES,
    CONSUL_NAMESPACE,
    NAMESPACE,
    POLICY_PACK,
    REGISTRY,
    SERVICES,
    USER_REPO,
    ChartConsul,
    LocalStack,
    Pulumi,
    changed,
    findings,
    registry_digest,
    registry_requests,
    timed,
    urn_key,
    wait_until,
)
from testkit import copy_service

pytestmark = pytest.mark.e2e
IMAGE_TYPE = "docker:index/image:Image"


@pytest.fixture(scope="module")
def user_stack(  # noqa: PLR0917 - fixtures
    user_parts, repo, cluster, engine, mirrored_images, postgres_image, prometheus_image, workdir
):
    """Stack `dev` of a temp copy of the repo, with only what this machine forces changed."""
    stack = LocalStack(repo, Pulumi(repo, workdir / "pulumi-home-user"), cluster)
    stack.init_user_path(
        "dev", user_parts, mirrored_images, postgres_image, engine.docker_host,
        prometheus_image=prometheus_image,
    )  # fmt: skip
    yield stack
    stack.pulumi("destroy", "--yes", "--skip-preview", check=False)


def is_write(request: str) -> bool:
    """A registry request that uploads a blob or a manifest."""
    return request.split(maxsplit=1)[0] in {"POST", "PATCH", "PUT"}


def deployed_images(stack: LocalStack) -> dict[str, set[str]]:
    pods = stack.kubectl_json("-n", NAMESPACE, "get", "pods")["items"]
    images: dict[str, set[str]] = {service: set() for service in SERVICES}
    for pod in pods:
        name = pod["metadata"]["labels"].get("app.kubernetes.io/name")
        if name in images:
            images[name] |= {c["image"] for c in pod["spec"]["containers"]}
    return images


def passing(stack: LocalStack, name: str) -> list[dict]:
    return ChartConsul(stack.cluster).entries(name)


def test_1_preview_then_up_builds_pushes_and_installs(user_stack, timings):
    with timed(timings, "user path: pulumi preview"):
        steps = user_stack.pulumi.preview_steps()
    creates = {urn_key(s["urn"]) for s in steps if s["op"] == "create"}
    assert {(IMAGE_TYPE, f"image-{service}") for service in SERVICES} <= creates
    assert ("kubernetes:helm.sh/v3:Release", "consul") in creates
    before = registry_requests(user_stack.cluster)
    with timed(timings, "user path: pulumi up (cold: build, push, chart, rollout)"):
        user_stack.pulumi("up", "--yes", "--skip-preview", timeout=1500)
    pushed = registry_requests(user_stack.cluster)[len(before) :]
    for service in SERVICES:
        assert any(
            r.startswith("PUT ") and f"consul-microservices-user/{service}/manifests/" in r
            for r in pushed
        ), service
    # What each Deployment runs is what the registry serves under that reference.
    for service, images in deployed_images(user_stack).items():
        assert len(images) == 1, images
        (image,) = images
        assert image.startswith(f"{USER_REPO}/{service}"), image
        assert registry_digest(image), f"{image} does not resolve in {REGISTRY}"


def test_2_consul_server_ready_and_both_services_registered_and_healthy(user_stack):
    wait_until(
        lambda: user_stack.cluster.kubectl(
            "-n", CONSUL_NAMESPACE, "wait", "--for=condition=Ready", "pod",
            "-l", "app=consul,component=server", "--timeout=5s", check=False,
        ).returncode == 0,
        timeout=300,
        what="the Consul server pod Ready",
    )  # fmt: skip
    for name in CONSUL_NAMES.values():  # every service of the catalog, each under its own name
        wait_until(
            lambda n=name: len(passing(user_stack, n)) == 2,
            timeout=180,
            what=f"2 passing {name} instances in the in-cluster catalog",
        )


def test_3_greeting_answers_from_a_greeter_found_through_consul(user_stack):
    greeters = {
        f"{e['Service']['Address']}:{e['Service']['Port']}"
        for e in passing(user_stack, "example-service")
    }
    service = user_stack.kubectl_json("-n", NAMESPACE, "get", "service", "books-api")
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    def greeting() -> requests.Response | bool:
        try:
            answer = requests.get(f"{url}/api/v1/greeting", params={"name": "user"}, timeout=10)
        except requests.RequestException:
            return False
        return answer.status_code == 200 and answer

    # books-api's watch of Consul (a blocking query) sees the instances within its wait at most.
    answer = wait_until(greeting, timeout=40, what="a greeting through books-api's Service")
    assert answer.json()["message"] == "Hello, user!"
    assert answer.json()["instance"] in greeters


def test_3c_consuls_ui_reads_the_stacks_prometheus_through_its_servers(user_stack):
    """The chart's ui.metrics: the servers proxy the UI's Prometheus queries (through the one
    flow the program opens from them to Prometheus), and Prometheus scrapes every service."""
    consul = ChartConsul(user_stack.cluster)

    def up() -> dict[str, float] | bool:
        answer = consul.get("/v1/internal/ui/metrics-proxy/api/v1/query?query=up")
        if answer.status_code != 200:
            return False
        targets = {}
        for result in answer.json()["data"]["result"]:
            job = result["metric"]["job"]
            targets[job] = targets.get(job, 0) + float(result["value"][1])
        return targets == {service: 2.0 for service in SERVICES} and targets

    wait_until(up, timeout=90, what="both pods of every service up, as Consul's proxy reads it")


ROGUE_REGISTRATION = """
import json, urllib.request
body = json.dumps({"Name": "example-service", "ID": "rogue", "Address": "10.0.0.66",
                   "Port": 50051}).encode()
request = urllib.request.Request(
    "http://consul-server.consul.svc:8500/v1/agent/service/register", data=body, method="PUT"
)
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as err:
    print(err.code)
except OSError as err:
    print("unreachable:", err)
"""


def test_3b_a_rogue_pod_can_neither_reach_consul_nor_register_example_service(user_stack):
    """The threat of issue 13: a pod in another namespace registers its own example-service."""
    kube = user_stack.cluster
    kube.kubectl("create", "namespace", "rogue")
    try:
        books = next(iter(deployed_images(user_stack)["books-api"]))  # any image with python
        kube.kubectl(
            "-n", "rogue", "run", "rogue", "--image", books, "--restart=Never",
            "--command", "--", "python", "-c", ROGUE_REGISTRATION,
        )  # fmt: skip
        wait_until(
            lambda: (
                kube.kubectl(
                    "-n", "rogue", "get", "pod", "rogue", "-o", "jsonpath={.status.phase}"
                ).stdout
                in {"Succeeded", "Failed"}
            ),
            timeout=60,
            what="the rogue pod to finish",
        )
        said = kube.kubectl("-n", "rogue", "logs", "rogue").stdout.strip()
        assert said.startswith("unreachable:") or said in {"401", "403"}, said
        assert [e["Service"]["ID"] for e in passing(user_stack, "example-service")] != []
        assert "rogue" not in {e["Service"]["ID"] for e in passing(user_stack, "example-service")}
        test_3_greeting_answers_from_a_greeter_found_through_consul(user_stack)
    finally:
        kube.kubectl("delete", "namespace", "rogue", "--wait=false", check=False)


def test_4_second_up_changes_nothing_builds_nothing_pushes_nothing(user_stack, timings):
    before = registry_requests(user_stack.cluster)
    with timed(timings, "user path: no-op pulumi up"):
        done = user_stack.pulumi("up", "--yes", "--skip-preview", "--expect-no-changes")
    assert "Resources:" in done.stdout and "changes" not in done.stdout.split("Resources:")[1]
    writes = [r for r in registry_requests(user_stack.cluster)[len(before) :] if is_write(r)]
    assert writes == [], writes


def test_4b_the_policy_pack_under_the_engine_finds_nothing(user_stack, policy_host, timings):
    """Every image the user path deploys is pinned by digest, the mirrored Consul images and the
    database's too (hack/local-stack.sh pushes them and keeps the digest): no finding at all."""
    with timed(timings, "user path: pulumi preview --policy-pack"):
        done = user_stack.pulumi.under(policy_host)(
            "preview", "--expect-no-changes", "--policy-pack", str(POLICY_PACK)
        )
    assert findings(done.stdout) == [], done.stdout


def test_5_one_line_change_rebuilds_and_rolls_only_that_service(user_stack, timings):
    server = user_stack.repo / "services" / "greeter" / "src" / "greeter" / "server.py"
    server.write_text(server.read_text() + "# e2e user path: a one-line change in the greeter\n")
    books_before = deployed_images(user_stack)["books-api"]
    steps = user_stack.pulumi.preview_steps()
    moved = changed(steps)
    assert moved.get((IMAGE_TYPE, "image-greeter")) in {"update", "replace"}
    assert (IMAGE_TYPE, "image-books-api") not in moved
    assert {key for key in moved if key[0] != IMAGE_TYPE} == {
        ("kubernetes:apps/v1:Deployment", "greeter-deployment")
    }
    before = registry_requests(user_stack.cluster)
    with timed(timings, "user path: pulumi up (greeter changed) to rollout complete"):
        user_stack.pulumi("up", "--yes", "--skip-preview")
        user_stack.cluster.kubectl(
            "-n", NAMESPACE, "rollout", "status", "deployment/greeter", "--timeout=300s"
        )
    writes = [r for r in registry_requests(user_stack.cluster)[len(before) :] if is_write(r)]
    assert writes and all("consul-microservices-user/greeter/" in r for r in writes), writes
    assert deployed_images(user_stack)["books-api"] == books_before


def test_5b_a_copy_of_the_greeter_is_a_third_service_with_its_own_consul_login(user_stack, timings):
    """The catalog for real: a folder copied from the greeter with only names inside it changed
    deploys, logs in to Consul with a token of its own and passes its checks; the other
    services' objects do not move."""
    copy_service(user_stack.repo / "services", "greeter", "greeter-copy")
    moved = changed(user_stack.pulumi.preview_steps())
    assert (IMAGE_TYPE, "image-greeter-copy") in moved
    assert ("kubernetes:apps/v1:Deployment", "greeter-copy-deployment") in moved
    for service in SERVICES:
        assert ("kubernetes:apps/v1:Deployment", f"{service}-deployment") not in moved
        assert (IMAGE_TYPE, f"image-{service}") not in moved
    with timed(timings, "user path: pulumi up (a third service) to its rollout"):
        user_stack.pulumi("up", "--yes", "--skip-preview", timeout=900)
        user_stack.cluster.kubectl(
            "-n", NAMESPACE, "rollout", "status", "deployment/greeter-copy", "--timeout=300s"
        )
    wait_until(
        lambda: len(passing(user_stack, "greeter-copy")) == 2,
        timeout=180,
        what="2 passing greeter-copy instances in the in-cluster catalog",
    )
    tokens = ChartConsul(user_stack.cluster).get(
        "/v1/acl/tokens?authmethod=consul-microservices-services"
    )
    identities = {
        identity["ServiceName"]
        for token in tokens.json()
        for identity in token.get("ServiceIdentities") or []
    }
    # Each service logged in with a token of its own service identity.
    assert {"greeter-copy", *CONSUL_NAMES.values()} <= identities


def test_6_destroy_leaves_no_object(user_stack, timings):
    with timed(timings, "user path: pulumi destroy"):
        user_stack.pulumi("destroy", "--yes", "--skip-preview", timeout=900)
    for namespace in (NAMESPACE, CONSUL_NAMESPACE):
        gone = user_stack.cluster.kubectl("get", "namespace", namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, namespace
    claims = json.loads(user_stack.cluster.kubectl("get", "pvc", "-A", "-o", "json").stdout)
    assert claims["items"] == []
