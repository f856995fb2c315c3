"""Fixtures shared by the test areas."""

import shutil
import tempfile
from pathlib import Path

import pytest
from testkit import running_cluster


@pytest.fixture(scope="session")
def cluster():
    """One local control plane (hack/cluster.sh on free loopback ports) for the whole session.

    Its state lives in a private temp dir, not pytest's basetemp: other pytest runs on the machine
    delete all but their three newest basetemps, which would take a running cluster's state along.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="consul-microservices-cluster-"))
    try:
        with running_cluster(state_dir) as kube:
            yield kube
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
