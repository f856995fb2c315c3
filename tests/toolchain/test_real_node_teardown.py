"""`hack/cluster.sh down` of a real node leaves the host as it found it.

Runs after test_real_node.py (file order), whose module cluster is down by then: one real node per
host.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from testkit import HACK, running_cluster, skip_unless_cluster_can_start

pytestmark = pytest.mark.toolchain

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "net.ipv4.conf.all.route_localnet",
)


def host_state() -> dict[str, object]:
    """What a node could leave behind: sysctls, iptables chains and ipsets, the node's links and
    address, its mounts and the pods' network namespaces. Podman's own (build containers, which
    other work on the machine may run meanwhile) are left out: they are not the node's."""

    def run(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout

    chains = {line.split()[0] for line in run("iptables-save").splitlines() if line[:1] == ":"}
    mounts = {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}
    return {
        "sysctls": {key: run("sysctl", "-n", key).strip() for key in SYSCTLS},
        "iptables chains": chains,
        "ipsets": set(run("ipset", "list", "-n").split()),
        "node links": run("ip", "-o", "link", "show", "cm0")
        + run("ip", "-o", "link", "show", "master", "cm0"),
        "addresses": set(run("ip", "-o", "addr", "show", "dev", "lo").split()),
        "mounts": {m for m in mounts if "consul-microservices" in m or m.startswith("/run/netns/")},
        "netns": {ns for ns in run("ip", "netns", "list").split() if ns.startswith("cni-")},
    }


def test_cluster_down_restores_the_host():
    skip_unless_cluster_can_start("real")
    # What reads the host (iptables-save, ipset, ip, sysctl) comes with the node's packages: install
    # them first, so the snapshot before the node sees the same tools as the one after.
    subprocess.run([str(HACK / "node.sh"), "install"], check=True, timeout=600)
    before = host_state()
    state_dir = Path(tempfile.mkdtemp(prefix="consul-microservices-teardown-"))
    # running_cluster's exit asserts that no process of the cluster and nothing of
    # `hack/node.sh leftovers` remains; this compares the whole host besides.
    try:
        with running_cluster(state_dir, node="real") as kube:
            during = host_state()
            assert during["sysctls"]["net.ipv4.ip_forward"] == "1"  # the node did change the host
            assert "cm0" in during["node links"]
            assert kube.kubectl("get", "nodes").returncode == 0
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    after = host_state()
    assert after == before
