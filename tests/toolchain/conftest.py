"""Fixtures for the toolchain checks: start what a check needs, stop it afterwards.

CI starts nothing, so the checks start their own parts (a cluster via hack/cluster.sh on free
loopback ports, a Consul dev agent, a podman API service); a missing part is a skip naming the
command that provides it.
"""

import pytest
from toolchain_support import Cluster, tool, wait_until


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    for name in (*Cluster.PROCESSES, "kubectl"):
        tool(name)
    kube = Cluster(tmp_path_factory.mktemp("cluster"))
    up = kube.script("up")
    try:
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield kube
    finally:
        down = kube.script("down")
        assert down.returncode == 0, f"cluster.sh down failed:\n{down.stdout}\n{down.stderr}"
        assert kube.leftover_processes() == []


@pytest.fixture
def namespace(cluster, request):
    """A fresh namespace per test, with the default ServiceAccount pods need; deleted after."""
    name = request.node.name.replace("_", "-").lower()[:50]
    cluster.kubectl("create", "namespace", name)
    wait_until(
        lambda: cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        timeout=30,
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
