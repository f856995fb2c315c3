"""Consul's ACLs under mocks: the chart manages them, each service logs in with a projected token,
and an external Consul's tokens are secrets that never reach the state in clear."""

from __future__ import annotations

import json

import pytest
from infra_harness import (
    CATALOG,
    CREDENTIALS,
    JOB,
    PROFILES,
    RELEASE,
    SECRET_KEYS,
    SERVICE_ACCOUNT,
    SERVICES,
    RecordingMocks,
    deploy,
    infra_module,
)

# How the engine marks a secret value (pulumi.runtime.rpc's special signature for secrets).
SECRET_SIG, SECRET_MARKER = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"
EXTERNAL = PROFILES["kind"] | {"consulInstall": "false", "consulAddress": "192.168.50.7:8500"}
# Each service's own token, in the one structured key (stored with `--secret --path`).
TOKENS = {"services": json.dumps({s: {"consulToken": f"{s}-s3cret"} for s in SERVICES})}


def tokens_without(service: str) -> dict[str, str]:
    return {
        "services": json.dumps(
            {s: {"consulToken": f"{s}-s3cret"} for s in SERVICES if s != service}
        )
    }


@pytest.fixture(scope="module", params=sorted(PROFILES))
def run(request):
    return deploy(PROFILES[request.param], SECRET_KEYS)


def test_the_chart_manages_acls(run):
    values = run.one(RELEASE, "consul").inputs["values"]
    assert values["global"]["acls"] == {"manageSystemACLs": True}
    assert values["connectInject"] == {"enabled": False}
    # No Consul DNS: with it, server-acl-init would let the anonymous token read the catalog.
    assert values["dns"] == {"enabled": False}


@pytest.mark.parametrize("service", SERVICES)
def test_each_pod_logs_in_with_a_short_lived_projected_token_only(run, service):
    pod = run.deployment(service)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert run.one(SERVICE_ACCOUNT, f"{service}-sa").inputs["automountServiceAccountToken"] is False
    (projected,) = [v["projected"] for v in pod["volumes"] if "projected" in v]
    (source,) = projected["sources"]
    token = source["serviceAccountToken"]
    assert token["path"] == "token"
    assert token["expirationSeconds"] == 600  # the shortest the API server issues
    # The API server's own audience: Consul's kubernetes auth method reviews tokens without
    # naming one, so a `consul` audience would fail every login (consul_acl.py).
    assert "audience" not in token
    env = run.env(service)
    assert env["CONSUL_LOGIN_AUTH_METHOD"] == "consul-microservices-services"
    assert env["CONSUL_LOGIN_BEARER_TOKEN_FILE"] == "/var/run/secrets/consul/token"  # noqa: S105
    assert "CONSUL_HTTP_TOKEN" not in env


def test_the_login_job_maps_each_service_account_to_its_service(run):
    (job,) = run.of_type(JOB)
    assert job.inputs["metadata"]["namespace"] == "consul"
    pod = job.inputs["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"] == [f"{s.name}={s.consul_name}" for s in CATALOG]
    # The tutorial's two, whatever else the catalog holds.
    assert {"books-api=books-api", "greeter=example-service"} <= set(container["args"])
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["CONSUL_HTTP_TOKEN"] == {
        "secretKeyRef": {"name": "consul-bootstrap-acl-token", "key": "token"}
    }
    assert env["APP_NAMESPACE"] == "consul-microservices"
    assert env["AUTH_METHOD"] == "consul-microservices-services"
    (volume,) = pod["volumes"]
    assert volume["secret"] == {"secretName": "consul-auth-method"}
    assert container["image"].startswith("hashicorp/consul:")
    assert container["securityContext"]["runAsNonRoot"] is True


def test_external_consul_tokens_are_secrets_in_a_secret():
    mocks = RecordingMocks()
    run = deploy(EXTERNAL | TOKENS, (*SECRET_KEYS, "services"), mocks)
    assert not run.of_type(JOB)
    for service in SERVICES:
        env = run.env(service)
        assert env["CONSUL_HTTP_TOKEN"] == {
            "secretKeyRef": {"name": f"{service}-env", "key": "CONSUL_HTTP_TOKEN"}
        }
        assert "CONSUL_LOGIN_AUTH_METHOD" not in env
        pod = run.deployment(service)["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if "projected" in v], "no token without a login"
    secrets = {r.name: r for r in run.of_type(CREDENTIALS)}
    assert set(secrets) >= {f"{service}-env" for service in SERVICES}
    # Pulumi's secret envelope: the engine stores the value encrypted in the state.
    string_data = secrets["greeter-env"].inputs["stringData"]
    assert string_data[SECRET_SIG] == SECRET_MARKER
    assert string_data["value"] == {"CONSUL_HTTP_TOKEN": "greeter-s3cret"}
    # Nothing else carries a token: no env value, no output.
    deployments = json.dumps([run.deployment(s) for s in SERVICES])
    assert "s3cret" not in deployments
    assert "s3cret" not in repr(run.outputs)


def test_external_consul_tokens_are_marked_secret_for_the_state():
    """The Secret's stringData is a secret Output: Pulumi encrypts it in the state."""
    config = infra_module("config")
    settings = config.validate(EXTERNAL | TOKENS, {"services"}, "consul-microservices", CATALOG)
    tokens = settings.consul_tokens
    assert set(tokens) == set(SERVICES)
    assert all(token.is_secret for token in tokens.values())
    assert "s3cret" not in repr(settings)


def test_a_plaintext_consul_token_is_refused():
    """`services` not stored with --secret: its tokens would be in the stack file in clear."""
    mocks = RecordingMocks()
    with pytest.raises(infra_module("config").ConfigError) as error:
        deploy(EXTERNAL | TOKENS, SECRET_KEYS, mocks)
    message = str(error.value)
    for service in SERVICES:
        key = f"services.{service}.consulToken"
        assert f"consul-microservices:{key}: got '<plaintext>'" in message
        assert f"`pulumi config set --secret --path '{key}'" in message
    assert "s3cret" not in message
    assert mocks.resources == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_its_own_token_or_none_has(service):
    config = infra_module("config")
    with pytest.raises(config.ConfigError) as error:
        config.validate(EXTERNAL | tokens_without(service), {"services"}, "p", CATALOG)
    (line,) = str(error.value).splitlines()[1:]
    assert line == (
        f"  p:services.{service}.consulToken: not set, expected a token of its own like the other"
        " services (or none: no Consul ACLs)"
    )


def test_consul_tokens_only_for_an_external_consul():
    config = infra_module("config")
    with pytest.raises(config.ConfigError, match=r"consulToken: .*empty while consulInstall"):
        config.validate(PROFILES["kind"] | TOKENS, {"services"}, "p", CATALOG)
