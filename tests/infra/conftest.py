"""The program reads the cluster variables make hands it (infra/config.py CLUSTER_VARIABLES); a
developer's own KIND_CLUSTER or MINIKUBE_PROFILE must not reach tests that assume them unset.
Session-wide, so that module-scoped deployments are made without them too."""

import pytest
from infra_harness import infra_module


@pytest.fixture(scope="session", autouse=True)
def _no_cluster_variables():
    with pytest.MonkeyPatch.context() as patch:
        for variables in infra_module("config").CLUSTER_VARIABLES.values():
            for variable in variables.values():
                patch.delenv(variable, raising=False)
        yield
