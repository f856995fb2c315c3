"""Fixtures for the toolchain checks: start what a check needs, stop it afterwards.

CI starts nothing, so the checks start their own parts (the session's cluster from
tests/conftest.py, a Consul dev agent, a podman API service); a missing part is a skip naming the
command that provides it.
"""

import pytest
from testkit import wait_until


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
