"""Beyond one node: `make up CLUSTER=kind KIND_WORKERS=3` (kind on podman, a control plane and
three workers), then node faults under the fault suite's load: 8 clients of greetings and book
listings through books-api's ClusterIP, and a writer POSTing books that records every 201.

Each fault's row: requests, failures, longest time without a success, time to full health (every
Deployment's replicas available on nodes that answer, both services passing in Consul, the
database ready) and whether every acknowledged book is still listed. What bounds each window:
- a drain: nothing fails. The pods leave through their preStop drain while the others serve
  (PDBs, maxUnavailable 1); the database's pod moves to another node with its volume (the node
  image's "shared" class: postgresStorageClass) and its image already there (the program's
  DaemonSet), and books-api's reads and pool wait for it (DATABASE_TIMEOUT_SECONDS);
- a node stopped: until the node controller marks it NotReady (kube-controller-manager's
  --node-monitor-grace-period, 50 s in Kubernetes 1.34, read from the cluster) and the endpoints
  drop its pods, a share of the requests still reaches books-api's pod there and fails; its pods
  are replaced 30 s later (the program's tolerations), and come back with the node;
- a node deleted for good (its container removed, its Node deleted, as a cloud's node
  controller does): its pods are deleted at once and replaced, the database with its data.

The side path (images built by podman, Consul an agent on this host), where the services' and the
database's faults are the point; the host reaches books-api's ClusterIP through the control plane
(a /32 route for the run). The steps run in file order on one cluster.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests
from kind_support import KindRun, host_state, kind_run, why_not_here
from local_stack import CONSUL_NAMES, NAMESPACE, NODE_FAULTS, SERVICES, timed, wait_until
from testkit import SteadyLoad

pytestmark = pytest.mark.e2e

CLUSTER = "consul-microservices-nodes"
# Apart from the local cluster's, a developer's kind cluster's and test_kind.py's.
POD_SUBNET = "10.247.0.0/16"
WORKERS = 3
CLIENTS = 8
# A request may wait this long: books-api waits up to 6 s for a database that moves.
CLIENT_TIMEOUT = 10
SETTLE_SECONDS = 3
DATABASE = "books-api-db"
# The program's tolerationSeconds for not-ready and unreachable nodes (infra/microservice.py).
TOLERATION_SECONDS = 30
# The pod garbage collector deletes the pods of a deleted node after a 40 s quarantine, looking
# every 20 s (kube-controller-manager's podgc controller; neither is a flag).
PODGC_SECONDS = 60


@dataclass
class NodeFault:
    """One row of the table."""

    requests: int
    failures: dict[int, int]
    longest_gap: float
    healthy_after: float
    writes: str

    def row(self, fault: str) -> str:
        failed = ", ".join(f"{n} x {s or 'no answer'}" for s, n in sorted(self.failures.items()))
        return (
            f"{fault:<40} {self.requests:>7} {failed or '0':>16} {self.longest_gap:>7.2f} s"
            f" {self.healthy_after:>7.1f} s  {self.writes}"
        )


class Writer:
    """POSTs a book after another until stopped; remembers the id of every one acknowledged."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}/resources/books"
        self.acknowledged: list[int] = []
        self.failed = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        with requests.Session() as session:
            n = 0
            while not self._done.is_set():
                n += 1
                book = {"title": f"written under a node fault #{n}", "author": "test_nodes"}
                try:
                    answer = session.post(self.url, json=book, timeout=CLIENT_TIMEOUT)
                except requests.RequestException:
                    self.failed += 1
                    continue
                if answer.status_code == 201:
                    self.acknowledged.append(answer.json()["id"])
                else:
                    self.failed += 1
                time.sleep(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._done.set()
        self._thread.join(timeout=30)


def is_ready(item: dict) -> bool:
    """A node's or a pod's Ready condition."""
    conditions = item["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Cluster:
    """The deployed cluster as the faults see it."""

    def __init__(self, run: KindRun) -> None:
        self.run = run
        ip = run.kubectl("-n", NAMESPACE, "get", "service", "books-api", "-o",
                         "jsonpath={.spec.clusterIP}").stdout  # fmt: skip
        self.base = f"http://{ip}:8080/api/v1"
        self.cluster_ip = ip

    def pods(self, app: str | None = None) -> list[dict]:
        selector = ["-l", f"app.kubernetes.io/name={app}"] if app else []
        return self.run.json("-n", NAMESPACE, "get", "pods", *selector)["items"]

    def placement(self) -> dict[str, set[str]]:
        """Each service's (and the database's) nodes, of its pods that are not going away."""
        found: dict[str, set[str]] = {}
        for pod in self.pods():
            app = pod["metadata"]["labels"].get("app.kubernetes.io/name")
            if app in (*SERVICES, DATABASE) and "deletionTimestamp" not in pod["metadata"]:
                found.setdefault(app, set()).add(pod["spec"].get("nodeName", ""))
        return found

    def workers(self) -> list[str]:
        nodes = self.run.json("get", "nodes")["items"]
        return sorted(
            n["metadata"]["name"]
            for n in nodes
            if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]
        )

    def ready_nodes(self) -> set[str]:
        nodes = self.run.json("get", "nodes")["items"]
        return {
            n["metadata"]["name"]
            for n in nodes
            if is_ready(n) and not n["spec"].get("unschedulable")
        }

    def healthy(self, lost: str = "") -> bool:
        """Every Deployment's replicas, and the database, ready on nodes that answer (not on
        `lost`, which may still be reported Ready); every service passing in Consul as many
        times as it has replicas."""
        ready = self.ready_nodes() - {lost}
        for app in (*SERVICES, DATABASE):
            pods = [p for p in self.pods(app) if "deletionTimestamp" not in p["metadata"]]
            wanted = 1 if app == DATABASE else 2
            serving = [p for p in pods if p["spec"].get("nodeName") in ready and is_ready(p)]
            if len(serving) != wanted:
                return False
        return all(len(self.run.passing(CONSUL_NAMES[s])) == 2 for s in SERVICES)

    def endpoints_on(self, node: str) -> list[str]:
        """The addresses books-api's EndpointSlices route to on `node`."""
        slices = self.run.json("-n", NAMESPACE, "get", "endpointslices", "-l",
                               "kubernetes.io/service-name=books-api")["items"]  # fmt: skip
        return [
            address
            for piece in slices
            for endpoint in piece.get("endpoints") or []
            if endpoint.get("nodeName") == node and endpoint["conditions"].get("ready")
            for address in endpoint["addresses"]
        ]

    def database_ready_elsewhere(self, node: str) -> bool:
        pods = self.pods(DATABASE)
        return any(p["spec"].get("nodeName") not in ("", node) and is_ready(p) for p in pods)

    def listed(self) -> set[int]:
        books = requests.get(f"{self.base}/resources/books", timeout=10).json()["books"]
        return {book["id"] for book in books}

    def node_holding(self, *, database: bool) -> tuple[str, str]:
        """The worker with the most of the services' pods, with the database or without it; and
        what it holds."""
        placement = self.placement()
        candidates = [
            node for node in self.workers() if (node in placement[DATABASE]) == database
        ]  # fmt: skip
        node = max(candidates, key=lambda n: sum(n in placement[s] for s in SERVICES))
        held = [s for s in (*SERVICES, DATABASE) if node in placement[s]]
        return node, ", ".join(held)


def grace_period(run: KindRun) -> float:
    """kube-controller-manager's --node-monitor-grace-period, or Kubernetes 1.34's default."""
    pod = run.json("-n", "kube-system", "get", "pods", "-l", "component=kube-controller-manager")
    for arg in pod["items"][0]["spec"]["containers"][0]["command"]:
        if arg.startswith("--node-monitor-grace-period="):
            return float(arg.split("=", 1)[1].rstrip("s"))
    return 50.0


@pytest.fixture(scope="module")
def cluster(workdir, timings) -> Iterator[Cluster]:
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    with kind_run(workdir / "kind-nodes", "side", CLUSTER, POD_SUBNET) as run:
        with timed(timings, f"kind nodes: make up CLUSTER=kind KIND_WORKERS={WORKERS} (cold)"):
            run.make("up", "CLUSTER=kind", f"KIND_WORKERS={WORKERS}")
        for service in SERVICES:
            run.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{service}",
                        "--timeout=300s")  # fmt: skip
        control_plane = subprocess.run(
            ["podman", "inspect", f"{CLUSTER}-control-plane", "--format",
             "{{.NetworkSettings.Networks.kind.IPAddress}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        cluster = Cluster(run)
        route = f"{cluster.cluster_ip}/32"
        subprocess.run(["ip", "route", "replace", route, "via", control_plane], check=True)
        try:
            wait_until(cluster.healthy, timeout=180, what="the stack healthy on every node")
            yield cluster
        finally:
            subprocess.run(["ip", "route", "del", route], check=False)


@contextmanager
def under_load(cluster: Cluster, fault: str) -> Iterator[dict[str, float]]:
    """The load and the writer around a fault; yields a dict for the fault's start ("at")."""
    urls = [f"{cluster.base}/greeting?name=nodes", f"{cluster.base}/resources/books"]
    marks: dict[str, float] = {}
    with (
        SteadyLoad(urls, clients=CLIENTS, timeout=CLIENT_TIMEOUT) as load,
        Writer(cluster.base) as writer,
    ):
        time.sleep(SETTLE_SECONDS)
        marks["at"] = time.monotonic()
        yield marks
        wait_until(cluster.healthy, timeout=300, what=f"full health after {fault}")
        healthy_after = time.monotonic() - marks["at"]
        time.sleep(SETTLE_SECONDS)
    listed = wait_until(cluster.listed, timeout=60, what="the books listed")
    lost = sorted(set(writer.acknowledged) - listed)
    report = load.report()
    NODE_FAULTS[fault] = NodeFault(
        report.requests, report.failures, report.longest_gap, round(healthy_after, 1),
        f"{len(writer.acknowledged) - len(lost)}/{len(writer.acknowledged)} kept"
        f" ({writer.failed} POSTs failed)",
    )  # fmt: skip
    marks["failures"] = [(sent - marks["at"], status) for sent, _, status in load.answers
                         if status != 200]  # fmt: skip
    assert report.requests > 100, report
    assert len(writer.acknowledged) > 10, "the writer got few books acknowledged"
    assert lost == [], f"acknowledged books no longer listed: {lost}"


def test_1_each_service_and_the_database_image_spread_over_the_workers(cluster):
    placement = cluster.placement()
    for service in SERVICES:
        assert len(placement[service]) == 2, placement  # topologySpreadConstraints
    pvc = cluster.run.json("-n", NAMESPACE, "get", "pvc", f"data-{DATABASE}-0")
    assert pvc["spec"]["storageClassName"] == "shared"
    volume = cluster.run.json("get", "pv", pvc["spec"]["volumeName"])
    assert "nodeAffinity" not in volume["spec"], volume["spec"]
    keepers = cluster.run.json("-n", NAMESPACE, "get", "daemonset", f"{DATABASE}-image")
    assert keepers["status"]["numberReady"] == WORKERS


def drain(cluster: Cluster, node: str) -> None:
    cluster.run.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                        "--timeout=180s", timeout=240)  # fmt: skip


@pytest.mark.parametrize("database", [False, True], ids=["services' node", "database's node"])
def test_2_a_drain_fails_nothing(cluster, database):
    node, held = cluster.node_holding(database=database)
    fault = f"drain ({held})"
    try:
        with under_load(cluster, fault):
            drain(cluster, node)
    finally:
        cluster.run.kubectl("uncordon", node)
    assert NODE_FAULTS[fault].failures == {}, NODE_FAULTS[fault]
    assert "(0 POSTs failed)" in NODE_FAULTS[fault].writes, NODE_FAULTS[fault]


def test_3_a_node_stopped_abruptly_fails_only_until_it_is_marked_not_ready(cluster):
    """Killed, then started again once its pods were replaced (TOLERATION_SECONDS after the node
    controller marked it NotReady)."""
    grace = grace_period(cluster.run)
    NODE_FAULTS["(--node-monitor-grace-period, s)"] = grace
    node, held = cluster.node_holding(database=False)
    fault = f"stopped abruptly, back later ({held})"
    with under_load(cluster, fault) as marks:
        subprocess.run(["podman", "kill", node], check=True, capture_output=True)
        wait_until(lambda: not cluster.endpoints_on(node), timeout=grace + 60,
                   what="books-api's endpoints on the lost node dropped")  # fmt: skip
        dropped = time.monotonic() - marks["at"]
        NODE_FAULTS["(its books-api endpoint dropped after, s)"] = round(dropped, 1)
        wait_until(lambda: cluster.healthy(lost=node), timeout=grace + TOLERATION_SECONDS + 120,
                   what="the lost node's pods replaced on the others")  # fmt: skip
        NODE_FAULTS["(its pods replaced after, s)"] = round(time.monotonic() - marks["at"], 1)
        subprocess.run(["podman", "start", node], check=True, capture_output=True)
        wait_until(lambda: node in cluster.ready_nodes(), timeout=180, what=f"{node} Ready")
        # Back with another address on the kind network (its entrypoint follows it): `make up`
        # points this host's route to its pods there, for the Consul agent's checks.
        cluster.run.make("up", "CLUSTER=kind", f"KIND_WORKERS={WORKERS}")
    assert dropped <= grace + 15, f"endpoints dropped {dropped:.1f} s after, grace {grace} s"
    late = [(t, s) for t, s in marks["failures"] if t > dropped + 5]
    assert late == [], f"failures after the lost node's endpoints were dropped: {late}"


def test_4_the_database_node_deleted_for_good_keeps_every_acknowledged_book(cluster):
    """The node's container removed, then its Node object, as an operator (or a cloud's node
    controller) does for a machine that is gone. Its pods stay, Ready as far as the API knows,
    until the pod garbage collector deletes them, 40 s after their node went missing (it looks
    every 20 s); only then can the StatefulSet recreate the database (at most one pod of each
    name). While the database is away books-api answers 503 and turns unready (its readiness is
    the database's), so nothing is served until it is back on another node with its volume."""
    node, held = cluster.node_holding(database=True)
    fault = f"deleted for good ({held})"
    with under_load(cluster, fault) as marks:
        subprocess.run(["podman", "rm", "-f", node], check=True, capture_output=True)
        cluster.run.kubectl("delete", "node", node)
        # Its /var volume too, as kind's delete does: by the node's label. `make down` removes
        # only the volumes of the nodes it still finds.
        volumes = subprocess.run(
            ["podman", "volume", "ls", "-q", "--filter", f"label={node}=true"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        subprocess.run(["podman", "volume", "rm", *volumes], check=True, capture_output=True)
        wait_until(lambda: cluster.database_ready_elsewhere(node), timeout=PODGC_SECONDS + 120,
                   what="the database ready on another node")  # fmt: skip
        back = time.monotonic() - marks["at"]
        NODE_FAULTS["(the database ready elsewhere after, s)"] = round(back, 1)
    # The collector's 60 s at most, then the StatefulSet's new pod scheduled and started on a
    # busy node (66.6 s and 81.4 s in two runs on 2 cores).
    assert back <= PODGC_SECONDS + 60, f"the database back after {back:.1f} s"
    late = [(t, s) for t, s in marks["failures"] if t > back + 10]
    assert late == [], f"failures after the database was back ({back:.1f} s): {late}"
    assert node not in cluster.workers()


def test_5_make_down_leaves_the_host_as_it_found_it(cluster):
    """Nothing of the cluster stays: the node removed by hand took its volume with it."""
    subprocess.run(["ip", "route", "del", f"{cluster.cluster_ip}/32"], check=True)  # the run's
    cluster.run.make("down", "CLUSTER=kind", timeout=900)
    deadline = time.monotonic() + 30  # podman's conmon releases a network a moment after rm
    while host_state() != cluster.run.before and time.monotonic() < deadline:
        time.sleep(1)
    assert host_state() == cluster.run.before
