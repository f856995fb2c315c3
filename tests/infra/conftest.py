"""The program reads the cluster variables make hands it (infra/config.py CLUSTER_VARIABLES); a
developer's own KIND_CLUSTER or MINIKUBE_PROFILE must not reach tests that assume them unset."""

import pytest
from infra_harness import infra_module


@pytest.fixture(autouse=True)
def _no_cluster_variables(monkeypatch):
    for variables in infra_module("config").CLUSTER_VARIABLES.values():
        for variable in variables.values():
            monkeypatch.delenv(variable, raising=False)
