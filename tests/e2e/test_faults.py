"""Faults on the real node while a steady load of greetings and book listings runs through
books-api's Service (its ClusterIP, from the node itself): nothing may fail, nothing be lost.

On the user path when its three parts are at hand (local_stack.user_path_parts): pulumi-docker
builds the images inside `up`, the chart installs Consul; so an `up` is also killed during the
image builds and during the chart's install, and the chart's Consul server pod is deleted.
Otherwise on the side path (images built by podman and deployed by digest, Consul a dev agent on
the node's address), which restarts that agent without its data instead; the summary says which
path ran. Each fault's requests, failures by status (0: no HTTP answer) and longest time without
a success are printed at the end of the run. The steps run in file order on one stack.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from local_stack import (
    CONSUL_NAMESPACE,
    FAULTS,
    NAMESPACE,
    SERVICES,
    STACK,
    ChartConsul,
    HostConsul,
    LocalStack,
    Pulumi,
    copy_repo,
    user_path_parts,
    wait_until,
)
from testkit import HACK, SteadyLoad

pytestmark = pytest.mark.e2e
CLIENTS = 8
SETTLE_SECONDS = 3  # of load before each fault, and after it has healed
# What the stack makes in its namespace, of the kinds it makes there.
KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Service", "ServiceAccount", "NetworkPolicy",
         "PodDisruptionBudget")  # fmt: skip


def fresh_dir(workdir, name: str):
    (workdir / name).mkdir()
    return workdir / name


@pytest.fixture(scope="module")
def consul(cluster, user_path, workdir) -> Iterator[ChartConsul | HostConsul]:
    """The Consul the services register with: the chart's server (installed by the stack's first
    `up`) on the user path, else a dev agent on the node's address."""
    if user_path:
        yield ChartConsul(cluster)
        return
    agent = HostConsul(fresh_dir(workdir, "faults-consul")).start()
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def stack(request, cluster, engine, user_path, consul, postgres_image, workdir):  # noqa: PLR0917
    """A repo copy of its own (its sources are edited here), not deployed yet."""
    repo = copy_repo(fresh_dir(workdir, "faults-repo"))
    local = LocalStack(repo, Pulumi(repo, workdir / "pulumi-home-faults"), cluster)
    if user_path:
        chart_images = request.getfixturevalue("mirrored_images")
        local.init_user_path(STACK, user_path, chart_images, postgres_image, engine.docker_host)
        FAULTS["(run on)"] = "the user path: pulumi-docker images, the Consul chart"
    else:
        local.init(consul.addr, request.getfixturevalue("images"), postgres_image)
        FAULTS["(run on)"] = "the side path (the user path's parts are missing: see the header)"
    yield local
    destroy(local)


def destroy(stack: LocalStack) -> None:
    """`destroy`, then what `make up`'s cluster step does before the next stack: volumes back."""
    done = stack.pulumi("destroy", "--yes", "--skip-preview", check=False, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for namespace in (NAMESPACE, CONSUL_NAMESPACE):
        wait_until(
            lambda n=namespace: stack.cluster.kubectl("get", "namespace", n,
                                                      check=False).returncode != 0,
            timeout=180,
            what=f"namespace {namespace} gone",
        )  # fmt: skip
    stack.reclaim_volumes()


def requires_user_path(user_path) -> None:
    if not user_path:
        pytest.skip("user path only; skipped: " + "; ".join(user_path_parts()[1]))


def project_up(stack: LocalStack, *flags: str, **popen) -> subprocess.CompletedProcess:
    """`up` as `make up` runs it: through hack/pulumi-stack.sh, which recovers interrupted ones."""
    args = [str(stack.repo / "hack" / "pulumi-stack.sh"), STACK, "up", "--yes", "--skip-preview"]
    return subprocess.run(
        [*args, *flags], cwd=stack.repo, env=stack.pulumi.env, capture_output=True, text=True,
        timeout=600, check=False, **popen,
    )  # fmt: skip


@contextmanager
def load_on(stack: LocalStack, fault: str) -> Iterator[SteadyLoad]:
    """Greetings and listings through books-api's Service; the report of what the block did."""
    ip = stack.cluster.kubectl(
        "-n", NAMESPACE, "get", "service", "books-api", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    base = f"http://{ip}:8080/api/v1"
    urls = [f"{base}/greeting?name=load", f"{base}/resources/books"]
    with SteadyLoad(urls, clients=CLIENTS, timeout=5) as load:
        time.sleep(SETTLE_SECONDS)
        yield load
        time.sleep(SETTLE_SECONDS)
    FAULTS[fault] = load.report()


def routed(url: str) -> bool:
    """One request on a connection of its own answered 200 (never a reused keep-alive one)."""
    try:
        return requests.get(url, timeout=2, headers={"Connection": "close"}).status_code == 200
    except requests.RequestException:
        return False


def assert_nothing_failed(fault: str) -> None:
    report = FAULTS[fault]
    assert report.requests > 100, report
    assert report.failures == {}, report


def rolled_out(stack: LocalStack, service: str) -> bool:
    deployment = stack.kubectl_json("-n", NAMESPACE, "get", "deployment", service)
    status, spec = deployment["status"], deployment["spec"]
    return (
        status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == spec["replicas"]
        and status.get("availableReplicas") == spec["replicas"]
        and status.get("replicas") == spec["replicas"]
    )


def restarts(stack: LocalStack) -> dict[str, int]:
    pods = stack.kubectl_json("-n", NAMESPACE, "get", "pods")["items"]
    return {
        pod["metadata"]["name"]: sum(c["restartCount"] for c in pod["status"]["containerStatuses"])
        for pod in pods
    }


def test_1_the_stack_serves_as_soon_as_up_returns(stack):
    """Right after `up`: every instance registered in Consul as it started serving, none
    critical until its first check (which made callers find no greeter: 503s).

    The load starts once books-api's ClusterIP routes: `up` returns when the pods are Ready, and
    kube-proxy programs their endpoints a moment later. A keep-alive connection opened in that
    moment escaped the cluster (kube-proxy restores its filter and nat tables apart: between the
    two, a new connection is neither rejected nor translated) and kept hitting whatever answered
    outside; how long the routing took is recorded."""
    done = project_up(stack)
    returned = time.monotonic()
    assert done.returncode == 0, done.stdout + done.stderr
    ip = stack.cluster.kubectl(
        "-n", NAMESPACE, "get", "service", "books-api", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout  # fmt: skip
    wait_until(lambda: routed(f"http://{ip}:8080/readyz"), timeout=30,
               what="books-api's ClusterIP to route to a ready pod")  # fmt: skip
    FAULTS["books-api's ClusterIP routes, after up returned"] = (
        f"{time.monotonic() - returned:.2f} s"
    )
    with load_on(stack, "right after up"):
        time.sleep(15 - 2 * SETTLE_SECONDS)  # the first 15 s
    assert_nothing_failed("right after up")


@pytest.mark.parametrize("service", SERVICES)
def test_2_a_rollout_under_load_fails_no_request(stack, engine, user_path, service):
    """The old pods drain (preStop) while the Service stops sending to them; the new ones are
    ready and passing before any old one goes (maxUnavailable 0). On the user path the `up`
    builds the new image; on the side path podman builds it first."""
    source = next((stack.repo / "services" / service / "src").rglob("__main__.py"))
    source.write_text(source.read_text() + f"# faults: a one-line change of {service}\n")
    if not user_path:
        stack.set_images({service: engine.build(stack.repo, service)})
    fault = f"rollout of {service}"
    with load_on(stack, fault):
        done = project_up(stack)
        wait_until(lambda: rolled_out(stack, service), timeout=180, what=f"{service} rollout")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_nothing_failed(fault)


def test_3_a_greeter_pod_deleted_under_load_fails_no_greeting(stack, consul):
    pods = stack.kubectl_json(
        "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=greeter"
    )
    # Not one of the rollout's old pods, which may still be draining.
    victim = next(p for p in pods["items"] if "deletionTimestamp" not in p["metadata"])
    address = victim["status"]["podIP"]
    fault = "greeter pod deleted"
    with load_on(stack, fault):
        deleted = time.monotonic()
        stack.cluster.kubectl("-n", NAMESPACE, "delete", "pod", victim["metadata"]["name"],
                              "--wait=false")  # fmt: skip

        def unlisted() -> bool:
            entries = consul.entries("example-service")
            return all(e["Service"]["Address"] != address for e in entries)

        wait_until(unlisted, timeout=60, what="Consul to stop listing the deleted instance")
        FAULTS["(Consul stopped listing it after, s)"] = round(time.monotonic() - deleted, 2)
        wait_until(lambda: rolled_out(stack, "greeter"), timeout=120, what="a new greeter pod")
    assert_nothing_failed(fault)


def test_4_consul_restarted_without_its_data_under_load_fails_nothing(stack, consul, user_path):
    """Greetings go on from books-api's cached instances, then to GREETER_ADDR while Consul lists
    none; both services register again by themselves."""
    if user_path:
        pytest.skip("side path only: the user path's Consul keeps its data (test_4b)")
    fault = "Consul restarted (data lost)"
    with load_on(stack, fault):
        consul.stop()
        time.sleep(5)
        consul.start()
        back = time.monotonic()
        wait_until(
            lambda: consul.passing("books-api") == 2 and consul.passing("example-service") == 2,
            timeout=90,
            what="both services registered and passing again",
        )
        FAULTS["(back to full health after, s)"] = round(time.monotonic() - back, 2)
    assert_nothing_failed(fault)


def test_4b_the_chart_consul_server_pod_deleted_under_load_fails_nothing(stack, consul, user_path):
    """Greetings go on from books-api's cached instances while the server is away; it comes back
    with its data (a PVC), so both services are still registered and passing, their login
    tokens still valid (every instance's service token, from the services' auth method)."""
    requires_user_path(user_path)
    tokens_before = service_tokens(consul)
    fault = "Consul server pod deleted"
    with load_on(stack, fault):
        old = consul.server_pod()["metadata"]["uid"]
        deleted = time.monotonic()
        stack.cluster.kubectl("-n", CONSUL_NAMESPACE, "delete", "pod", "consul-server-0",
                              "--wait=false")  # fmt: skip

        def back() -> bool:
            pod = consul.server_pod()
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions", [])
            )
            return pod["metadata"]["uid"] != old and ready

        wait_until(back, timeout=180, what="a new Consul server pod Ready")
        wait_until(
            lambda: consul.passing("books-api") == 2 and consul.passing("example-service") == 2,
            timeout=90,
            what="both services registered and passing again",
        )
        FAULTS["(back to full health after, s)"] = round(time.monotonic() - deleted, 2)
    assert tokens_before <= service_tokens(consul), "login tokens lost with the pod"
    assert_nothing_failed(fault)


def service_tokens(consul: ChartConsul) -> set[str]:
    """The accessor IDs of the tokens the services logged in for."""
    tokens = consul.get("/v1/acl/tokens?authmethod=consul-microservices-services").json()
    return {token["AccessorID"] for token in tokens}


def test_5_containerd_and_kubelet_restarted_under_load_restart_no_pod(stack):
    before = restarts(stack)
    fault = "containerd and kubelet restarted"
    with load_on(stack, fault):
        done = subprocess.run([str(HACK / "node.sh"), "restart-runtime"], env=stack.cluster.env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        time.sleep(10)  # probes run against the restarted kubelet
    assert restarts(stack) == before
    assert_nothing_failed(fault)


def pulumi_plugins_left() -> list[str]:
    """Plugins whose pulumi is gone (adopted by init)."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    return [
        line.strip()
        for line in table.splitlines()
        if line.split()[1] == "1" and ("pulumi-resource-" in line or "pulumi-language-" in line)
    ]


def interrupted_up(stack: LocalStack, started: Callable[[], bool], sig: int) -> None:
    """An `up` that gets `sig` (to its whole process group, as a cancelled CI job or a Ctrl-C)
    as soon as `started()`."""
    path = stack.repo / "interrupted-up.log"
    args = [str(stack.repo / "hack" / "pulumi-stack.sh"), STACK, "up", "--yes", "--skip-preview"]
    with path.open("w") as log:
        up = subprocess.Popen(args, cwd=stack.repo, env=stack.pulumi.env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 180
        while not started():
            assert up.poll() is None, f"up ended before the point:\n{path.read_text()}"
            assert time.monotonic() < deadline, f"up never reached the point:\n{path.read_text()}"
            time.sleep(0.2)
        os.killpg(up.pid, sig)
        up.wait(timeout=120)


def cluster_objects(stack: LocalStack) -> set[tuple[str, str]]:
    """The namespace's objects of KINDS (less its default ServiceAccount)."""
    kinds = ",".join(k.lower() + "s" if k != "NetworkPolicy" else "networkpolicies" for k in KINDS)
    items = stack.kubectl_json("-n", NAMESPACE, "get", kinds)["items"]
    return {(i["kind"], i["metadata"]["name"]) for i in items if i["metadata"]["name"] != "default"}


def state_objects(stack: LocalStack) -> set[tuple[str, str]]:
    """The same, as the stack's state holds them."""
    resources = json.loads(stack.pulumi("stack", "export").stdout)["deployment"]["resources"]
    outputs = [r.get("outputs") or {} for r in resources if r["type"].startswith("kubernetes:")]
    return {
        (o["kind"], o["metadata"]["name"])
        for o in outputs
        if o.get("kind") in KINDS and o.get("metadata", {}).get("namespace") == NAMESPACE
    }


def assert_recovered(stack: LocalStack, done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pulumi-stack: removed the lock of an interrupted update" in done.stdout
    no_op = stack.pulumi("preview", "--expect-no-changes", check=False)
    assert no_op.returncode == 0, no_op.stdout + no_op.stderr
    assert cluster_objects(stack) == state_objects(stack)
    assert pulumi_plugins_left() == []


def assert_rolled_out(stack: LocalStack, done: subprocess.CompletedProcess) -> None:
    """The next `up` finds the template already applied, and the provider then awaits only enough
    ready pods, old ones included (pulumi-kubernetes provider/pkg/await/deployment.go,
    changeTriggeredRollout): hack/pulumi-stack.sh awaits the rollout the interrupted one started,
    so that `up` returns with every Deployment rolled out."""
    assert "did not finish; its rollouts may still run" in done.stdout
    assert [s for s in SERVICES if not rolled_out(stack, s)] == []


def interrupted_rollout(stack: LocalStack, log_level: str, sig: int) -> None:
    """A new logLevel (every Deployment rolls), and an `up` that gets `sig` once it rolls."""
    stack.pulumi.config_set("logLevel", log_level)

    def generation() -> int:
        return stack.kubectl_json("-n", NAMESPACE, "get", "deployment", "greeter")["metadata"][
            "generation"
        ]

    before = generation()
    interrupted_up(stack, lambda: generation() > before, sig)


def test_6_an_up_killed_during_the_rollout_is_completed_by_the_next_up(stack):
    interrupted_rollout(stack, "DEBUG", signal.SIGKILL)
    done = project_up(stack)
    assert_recovered(stack, done)
    assert_rolled_out(stack, done)


def helm_records(stack: LocalStack) -> list[str]:
    """The statuses of Helm's records of the Consul release (one per revision), oldest first."""
    records = stack.kubectl_json(
        "-n", CONSUL_NAMESPACE, "get", "secret", "-l", "owner=helm,name=consul"
    )["items"]  # fmt: skip
    records.sort(key=lambda r: int(r["metadata"]["labels"]["version"]))
    return [r["metadata"]["labels"]["status"] for r in records]


def pending_types(stack: LocalStack) -> set[str]:
    """The resource types of the state's pending operations (read while the stack is locked)."""
    state = json.loads(stack.pulumi("stack", "export").stdout)["deployment"]
    return {op["resource"]["type"] for op in state.get("pending_operations") or []}


IMAGE = "docker:index/image:Image"
RELEASE = "kubernetes:helm.sh/v3:Release"
# Where a cold `up` is killed: when it has got there, and what the state then holds pending.
KILL_POINTS = {
    "the image builds": (
        lambda stack: re.search(
            r"docker:index:Image image-\S+ creating .*Starting Docker build",
            (stack.repo / "interrupted-up.log").read_text(),
        ),
        IMAGE,
    ),
    "the chart's install": (lambda stack: helm_records(stack) != [], RELEASE),
    "the Deployments' creation": (
        lambda stack: stack.cluster.kubectl(
            "-n", NAMESPACE, "get", "deployment", "greeter", check=False
        ).returncode == 0,
        "kubernetes:apps/v1:Deployment",
    ),
}  # fmt: skip


@pytest.mark.parametrize("point", KILL_POINTS)
def test_7_a_cold_up_killed_during_each_step_is_completed_by_the_next_up(stack, user_path, point):
    """Objects the killed `up` created reach the state only through the next one, which applies
    them again as the same field manager; later changes to them must still apply. A chart install
    it cut short stays pending in Helm, which refuses to install the release again until
    hack/pulumi-stack.sh has removed that record."""
    if point != "the Deployments' creation":
        requires_user_path(user_path)
    got_there, pending = KILL_POINTS[point]
    destroy(stack)
    interrupted_up(stack, lambda: got_there(stack), signal.SIGKILL)
    assert pending in pending_types(stack), (stack.repo / "interrupted-up.log").read_text()
    if point == "the chart's install":
        assert helm_records(stack) == ["pending-install"]
    done = project_up(stack)
    assert "clearing the pending creates" in done.stdout
    if point == "the chart's install":
        assert "Helm's record of release consul/consul's interrupted install" in done.stdout
    assert_recovered(stack, done)
    assert pending_types(stack) == set()
    if user_path:
        assert helm_records(stack) == ["deployed"]


def test_8_an_up_cancelled_with_ctrl_c_is_completed_by_the_next_up(stack):
    interrupted_rollout(stack, "INFO", signal.SIGINT)
    log = (stack.repo / "interrupted-up.log").read_text()
    done = project_up(stack)
    assert done.returncode == 0, log + done.stdout + done.stderr
    assert "removed the lock" not in done.stdout, "Pulumi cancels gracefully: it unlocks itself"
    assert_rolled_out(stack, done)
    assert stack.pulumi("preview", "--expect-no-changes", check=False).returncode == 0
    assert pulumi_plugins_left() == []


def test_8b_a_cold_up_cancelled_with_ctrl_c_during_the_charts_install_is_completed(
    stack, user_path
):
    """Pulumi's cancellation reaches the provider, which stops waiting for the chart: Helm's
    record is left as the cancelled install made it, and the next `up` completes from there."""
    requires_user_path(user_path)
    destroy(stack)
    interrupted_up(stack, lambda: helm_records(stack) != [], signal.SIGINT)
    log = (stack.repo / "interrupted-up.log").read_text()
    left = helm_records(stack)
    FAULTS["(Helm's records after the Ctrl-C)"] = ", ".join(left) or "none"
    done = project_up(stack)
    assert done.returncode == 0, f"Helm's records after the Ctrl-C: {left}\n{log}{done.stdout}"
    assert "removed the lock" not in done.stdout, "Pulumi cancels gracefully: it unlocks itself"
    assert_rolled_out(stack, done)
    assert stack.pulumi("preview", "--expect-no-changes", check=False).returncode == 0
    assert helm_records(stack)[-1] == "deployed"
    assert pulumi_plugins_left() == []


def test_9_destroy_after_the_faults_leaves_nothing(stack):
    destroy(stack)
    assert stack.kubectl_json("get", "pvc", "-A")["items"] == []
    assert pulumi_plugins_left() == []
