"""The objects the program renders, checked by a real kube-apiserver (hack/cluster.sh).

Server-side dry-run validates every field against the API schema, and Pod Security admission
enforces "restricted" on the pods built from the Deployments' and the database StatefulSet's
templates in the app namespace.
Skips, naming `make toolchain`, when the control-plane binaries are absent.
"""

from __future__ import annotations

import copy
import json

import pytest
from infra_harness import (
    DEPLOYMENT,
    HPA,
    JOB,
    NAMESPACE,
    NETPOL,
    PDB,
    PROFILES,
    SECRET_KEYS,
    SERVICE,
    SERVICE_ACCOUNT,
    STATEFULSET,
    deploy,
)

pytestmark = pytest.mark.toolchain
APP_NS = "consul-microservices"


@pytest.fixture(scope="module")
def rendered(cluster):
    """The existing-cluster profile's objects; the namespaces and ServiceAccounts created for real
    (pods are admitted only with their ServiceAccount present)."""
    run = deploy(PROFILES["existing"], SECRET_KEYS)
    for obj in [*run.of_type(NAMESPACE), *run.of_type(SERVICE_ACCOUNT)]:
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj.inputs))
    return run


def _dry_run(cluster, manifest: dict):
    return cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(manifest),
        check=False,
    )  # fmt: skip


def _pod_from(deployment: dict, name: str) -> dict:
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": name, "namespace": APP_NS},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("typ", [SERVICE, PDB, NETPOL, HPA, DEPLOYMENT, JOB, STATEFULSET])
def test_the_api_server_accepts_every_object(cluster, rendered, typ):
    objects = rendered.of_type(typ)
    assert objects
    for obj in objects:
        # Pulumi names what the program leaves unnamed (the Job: a new one per change).
        manifest = copy.deepcopy(obj.inputs)
        manifest["metadata"].setdefault("name", obj.name)
        result = _dry_run(cluster, manifest)
        assert result.returncode == 0, f"{obj.name}: {result.stderr}"
        assert "PodSecurity" not in result.stderr, f"{obj.name}: {result.stderr}"


@pytest.mark.parametrize("service", ["books-api", "greeter"])
def test_pods_pass_pod_security_restricted(cluster, rendered, service):
    pod = _pod_from(rendered.deployment(service), f"{service}-admission")
    result = _dry_run(cluster, pod)
    assert result.returncode == 0, result.stderr


def test_the_database_pod_passes_pod_security_restricted(cluster, rendered):
    """As the StatefulSet controller makes it: its claim template becomes a claim volume."""
    statefulset = rendered.one(STATEFULSET, "books-api-db-statefulset").inputs
    pod = _pod_from(statefulset, "books-api-db-0")
    claim = {"claimName": "data-books-api-db-0"}
    pod["spec"]["volumes"].append({"name": "data", "persistentVolumeClaim": claim})
    result = _dry_run(cluster, pod)
    assert result.returncode == 0, result.stderr


def test_the_namespace_really_enforces_restricted(cluster, rendered):
    """Control: the same pod without runAsNonRoot is refused, so the check above can fail."""
    pod = _pod_from(rendered.deployment("greeter"), "greeter-root")
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    del pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    result = _dry_run(cluster, pod)
    assert result.returncode != 0
    assert "PodSecurity" in result.stderr and "runAsNonRoot" in result.stderr
