"""`hack/cluster.sh down` of a real node leaves the host as it found it.

Runs after test_real_node.py (file order), whose module cluster is down by then: one real node per
host.
"""

import subprocess
import tempfile
from pathlib import Path

import pytest
from testkit import running_cluster

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
    """What a node could leave behind: sysctls, iptables chains and ipsets, links, addresses,
    mounts and network namespaces."""

    def run(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout

    chains = {line.split()[0] for line in run("iptables-save").splitlines() if line[:1] == ":"}
    return {
        "sysctls": {key: run("sysctl", "-n", key).strip() for key in SYSCTLS},
        "iptables chains": chains,
        "ipsets": set(run("ipset", "list", "-n").split()),
        "links": {
            line.split(":")[1].split("@")[0].strip()
            for line in run("ip", "-o", "link").splitlines()
        },
        "addresses": set(run("ip", "-o", "addr", "show", "dev", "lo").split()),
        "mounts": {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()},
        "netns": set(run("ip", "netns", "list").split()),
    }


def test_cluster_down_restores_the_host(tmp_path):
    before = host_state()
    state_dir = Path(tempfile.mkdtemp(prefix="consul-microservices-teardown-"))
    # running_cluster's exit asserts that no process of the cluster and nothing of
    # `hack/node.sh leftovers` remains; this compares the whole host besides.
    with running_cluster(state_dir, node="real") as kube:
        during = host_state()
        assert during["sysctls"]["net.ipv4.ip_forward"] == "1"  # the node did change the host
        assert "cm0" in during["links"]
        assert kube.kubectl("get", "nodes").returncode == 0
    after = host_state()
    assert after == before
