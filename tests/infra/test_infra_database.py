"""books-api's database under mocks: a StatefulSet with its volume, a Secret both sides read, flows
that admit only books-api, and a password that never appears in clear; or an external one."""

from __future__ import annotations

import json

import pytest
from infra_harness import (
    CREDENTIALS,
    DYNAMIC,
    NETPOL,
    PROFILES,
    SECRET_KEYS,
    SERVICE,
    STATEFULSET,
    Deployment,
    RecordingMocks,
    deploy,
    generated_password,
    infra_module,
    services_key,
)
from network_eval import APP_NS, Conn, Pod, allowed
from pulumi.runtime import rpc

database = infra_module("database")
PASSWORD = generated_password("books-api-db-password")
BOOKS = Pod("books-api", APP_NS, {"app.kubernetes.io/name": "books-api"}, "10.244.0.10")
GREETER = Pod("greeter", APP_NS, {"app.kubernetes.io/name": "greeter"}, "10.244.0.11")
DB = Pod("books-api-db-0", APP_NS, {"app.kubernetes.io/name": "books-api-db"}, "10.244.0.13")
STRAY = Pod("stray", APP_NS, {"app.kubernetes.io/name": "debug"}, "10.244.0.12")
OUTSIDER = Pod("client", "default", {"run": "curl"}, "10.244.0.30")
EXTERNAL_DB = Pod("db-vm", "", {}, "192.168.60.9")
EXTERNAL = services_key(
    {"books-api": {"databaseUrl": "postgresql://books:s3cret@192.168.60.9:6432/books"}}
)


@pytest.fixture(scope="module", params=sorted(PROFILES))
def run(request) -> Deployment:
    return deploy(PROFILES[request.param], SECRET_KEYS)


def is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def test_the_database_is_a_statefulset_of_one_with_its_own_volume(run):
    spec = run.one(STATEFULSET, "books-api-db-statefulset").inputs["spec"]
    assert spec["replicas"] == 1
    assert spec["serviceName"] == "books-api-db"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"] == {"storage": "1Gi"}
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == database.DEFAULT_IMAGE
    assert "@sha256:" in container["image"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["POSTGRES_USER"] == env["POSTGRES_DB"] == "books_api"
    assert env["PGDATA"] == "/var/lib/postgresql/data/pgdata"  # a subdirectory of the volume
    assert env["POSTGRES_PASSWORD"] == {
        "secretKeyRef": {"name": "books-api-db-credentials", "key": "POSTGRES_PASSWORD"}
    }
    service = run.one(SERVICE, "books-api-db-service").inputs["spec"]
    (port,) = service["ports"]
    assert port["port"] == 5432
    assert service["publishNotReadyAddresses"] is True  # a moved database answers once it listens


def test_every_node_keeps_the_database_image_in_a_pod_that_only_sleeps(run):
    """So a database pod that moves to another node does not wait for a pull."""
    statefulset = run.one(STATEFULSET, "books-api-db-statefulset").inputs["spec"]
    keeper = run.one("kubernetes:apps/v1:DaemonSet", "books-api-db-image").inputs["spec"]
    (container,) = keeper["template"]["spec"]["containers"]
    assert container["image"] == statefulset["template"]["spec"]["containers"][0]["image"]
    assert container["command"] == ["sleep", "infinity"]
    assert "ports" not in container
    pod = keeper["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Its own labels: neither the database's Service nor its policy selects it.
    labels = keeper["selector"]["matchLabels"]
    assert labels != statefulset["selector"]["matchLabels"]
    assert not set(labels.items()) >= set(statefulset["selector"]["matchLabels"].items())


def test_postgres_storage_class_names_the_volumes_class():
    """A class whose volumes are not bound to one node lets the database outlive its node."""
    run = deploy(PROFILES["kind"] | {"postgresStorageClass": "shared"}, SECRET_KEYS)
    spec = run.one(STATEFULSET, "books-api-db-statefulset").inputs["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "shared"


def test_the_database_pod_passes_pod_security_restricted(run):
    pod = run.one(STATEFULSET, "books-api-db-statefulset").inputs["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 999
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsUser"] == context["runAsGroup"] == 999
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"}


def test_books_api_gets_the_url_and_the_password_through_its_secret(run):
    env = run.env("books-api")
    assert env["DATABASE_URL"] == f"postgresql://books_api@books-api-db.{APP_NS}.svc:5432/books_api"
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "books-api-env", "key": "PGPASSWORD"}}
    assert "DATABASE_URL" not in run.env("greeter")
    secrets = {s.name: s.inputs["stringData"] for s in run.of_type(CREDENTIALS)}
    for name, key in (("books-api-env", "PGPASSWORD"), ("books-api-db-credentials",
                                                        "POSTGRES_PASSWORD")):  # fmt: skip
        assert is_secret(secrets[name])
        assert secrets[name]["value"][key] == PASSWORD


def test_the_password_appears_nowhere_in_clear(run):
    """Only inside Pulumi's secret envelope (encrypted in the state): no input, no output."""

    def clear(value) -> str:
        if is_secret(value):
            return ""
        if isinstance(value, dict):
            return "".join(clear(v) for v in value.values())
        if isinstance(value, list):
            return "".join(clear(v) for v in value)
        return str(value)

    (password,) = [r for r in run.of_type(DYNAMIC) if r.name == "books-api-db-password"]
    assert PASSWORD not in "".join(clear(r.inputs) for r in run.resources)
    assert PASSWORD not in json.dumps(run.outputs)
    assert password.inputs.get("value") is None  # generated by its provider, not an input


@pytest.mark.parametrize(
    ("src", "dst", "port", "expected"),
    [
        (BOOKS, DB, 5432, True),
        (GREETER, DB, 5432, False),
        (STRAY, DB, 5432, False),
        (OUTSIDER, DB, 5432, False),
        (BOOKS, DB, 5433, False),
        (DB, BOOKS, 8080, False),
        (DB, OUTSIDER, 443, False),
        (DB, GREETER, 50051, False),
    ],
    ids=lambda v: v.name if isinstance(v, Pod) else str(v),
)
def test_only_books_api_reaches_its_database(run, src, dst, port, expected):
    assert allowed(run, Conn(src, dst, port)) is expected


def test_the_database_itself_admits_books_api_only(run):
    """Its own policy, whatever the other pods' egress: defence in depth."""
    spec = run.one(NETPOL, "books-api-db-netpol").inputs["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "books-api-db"}}
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "books-api"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        }
    ]


def test_an_external_database_replaces_the_statefulset():
    run = deploy(PROFILES["kind"] | EXTERNAL, (*SECRET_KEYS, "services"))
    assert not run.of_type(STATEFULSET)
    assert not [r for r in run.of_type(NETPOL) if r.name == "books-api-db-netpol"]
    env = run.env("books-api")
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "books-api-env", "key": "DATABASE_URL"}}
    assert "PGPASSWORD" not in env
    assert "s3cret" not in json.dumps(run.deployment("books-api"))
    assert allowed(run, Conn(BOOKS, EXTERNAL_DB, 6432))
    assert not allowed(run, Conn(BOOKS, EXTERNAL_DB, 5432))
    assert not allowed(run, Conn(GREETER, EXTERNAL_DB, 6432))


@pytest.mark.parametrize(
    ("settings", "secret", "expected"),
    [
        ({"books-api": {"databaseUrl": "postgresql://b:s3cret@10.0.0.1/books"}}, False,
         "services.books-api.databaseUrl: got '<plaintext>', expected a secret: `pulumi config "
         "set --secret --path 'services.books-api.databaseUrl' …`"),
        ({"books-api": {"databaseUrl": "mysql://b:s3cret@10.0.0.1/books"}}, True,
         "services.books-api.databaseUrl: got '<secret>', expected a postgresql://user:password@"
         "host[:port]/database URI"),
        ({"books-api": {"databaseUrl": "postgresql://b:s3cret@db.example.com/books"}}, True,
         "services.books-api.databaseCidr: got '', expected the CIDR of the database at "
         "db.example.com (required unless its host is an IP)"),
        ({"greeter": {"databaseUrl": "postgresql://b:s3cret@10.0.0.1/books"}}, True,
         "services.greeter.databaseUrl: got '<secret>', expected empty: "
         "services/greeter/service.yaml declares no database"),
    ],
    ids=["plaintext", "not postgresql", "host name without a CIDR", "no database declared"],
)  # fmt: skip
def test_a_bad_external_database_fails_before_any_resource(settings, secret, expected):
    mocks = RecordingMocks()
    secrets = (*SECRET_KEYS, "services") if secret else SECRET_KEYS
    with pytest.raises(infra_module("config").ConfigError) as error:
        deploy(PROFILES["kind"] | services_key(settings), secrets, mocks)
    assert f"consul-microservices:{expected}" in str(error.value)
    assert "s3cret" not in str(error.value)
    assert mocks.resources == []
