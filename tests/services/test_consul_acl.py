"""The services against a real Consul agent with ACLs on and default policy deny.

Each service logs in as the cluster has it log in: a bearer token naming its ServiceAccount, an
auth method, and binding rules mapping the account to its service identity (books-api ->
books-api, greeter -> example-service). The cluster's auth method is of type `kubernetes` (Consul
asks the API server to review the token); here it is of type `jwt` over a key this test holds,
so no API server is needed: the login call, the binding rules and the tokens are the same.
"""

import base64
import json
import signal
import subprocess
import time
import uuid

import consul
import pytest
from books_api import greeter_client
from books_api.app import create_app
from books_api.config import Settings as BooksSettings
from service_common import consul_registration
from services_support import ConsulAgent, free_port, start_gunicorn, wait_until

AUTH_METHOD = "test-service-accounts"
SHORT_LIVED = "test-short-lived"  # the same logins, with tokens that expire after Consul's minimum
ROLES = {"books-api": "books-api", "greeter": "example-service"}  # ServiceAccount -> identity


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtIssuer:
    """Signs RS256 JWTs with openssl, as the API server signs projected ServiceAccount tokens."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.key = folder / "issuer.key"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-out", str(self.key)],
            check=True,
            capture_output=True,
        )
        self.public_pem = subprocess.run(
            ["openssl", "pkey", "-in", str(self.key), "-pubout"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def token(self, service_account: str) -> str:
        now = int(time.time())
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        claims = {"sub": service_account, "aud": ["consul"], "iat": now, "exp": now + 3600}
        signed = f"{header}.{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signed.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signed}.{b64url(signature)}"

    def token_file(self, service_account: str):
        path = self.folder / f"{service_account}.jwt"
        path.write_text(self.token(service_account))
        return path


def set_up_logins(
    agent: ConsulAgent, issuer: JwtIssuer, method: str = AUTH_METHOD, ttl: str = "1h"
) -> None:
    admin = management(agent)
    admin.acl.auth_method.create(
        method,
        "jwt",
        config={
            "JWTValidationPubKeys": [issuer.public_pem],
            "BoundAudiences": ["consul"],
            "ClaimMappings": {"sub": "service_account"},
        },
        max_token_ttl=ttl,
    )
    for account, identity in ROLES.items():
        admin.acl.binding_rule.create(
            method, "service", identity, selector=f'value.service_account == "{account}"'
        )


def management(agent: ConsulAgent) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port, token=agent.management_token)


def login_tokens(agent: ConsulAgent, method: str = AUTH_METHOD) -> list[dict]:
    return [t for t in management(agent).acl.token.list() if t.get("AuthMethod") == method]


def registered(agent: ConsulAgent, service_id: str) -> dict | None:
    return agent.get("/v1/agent/services").get(service_id)


def passing(agent: ConsulAgent, service: str, service_id: str) -> bool:
    checks = agent.get(f"/v1/health/checks/{service}")
    return any(c["ServiceID"] == service_id and c["Status"] == "passing" for c in checks)


def login_settings(
    issuer: JwtIssuer, agent: ConsulAgent, account: str, method: str = AUTH_METHOD
) -> dict:
    return {
        "consul_http_addr": agent.addr,
        "consul_login_auth_method": method,
        "consul_login_bearer_token_file": issuer.token_file(account),
    }


def logged_in_greeter(greeter_factory, issuer, agent, service_id: str, method: str = AUTH_METHOD):
    """A greeter that logs in as ServiceAccount `greeter`, once its check passes in `agent`."""
    greeter = greeter_factory(
        **login_settings(issuer, agent, "greeter", method),
        service_id=service_id,
        service_address="127.0.0.1",
        consul_check_interval="1s",
    )
    wait_until(lambda: passing(agent, "example-service", service_id), what="gRPC check")
    return greeter


def books_api_app(issuer, agent, method: str = AUTH_METHOD):
    """books-api's app, discovering with the token of ServiceAccount `books-api`."""
    settings = login_settings(issuer, agent, "books-api", method)
    return create_app(BooksSettings(**settings, greeter_timeout_seconds=2))


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> JwtIssuer:
    return JwtIssuer(tmp_path_factory.mktemp("jwt"))


@pytest.fixture(scope="module")
def acl_agent(consul_path, issuer):
    agent = ConsulAgent(consul_path, management_token=str(uuid.uuid4())).start()
    set_up_logins(agent, issuer)
    set_up_logins(agent, issuer, SHORT_LIVED, ttl="1m")
    yield agent
    agent.stop()


@pytest.fixture
def login_as(issuer, acl_agent):
    """A py-consul client holding the token a ServiceAccount's login gets; logged out after."""
    clients = []

    def login(account: str) -> consul.Consul:
        anonymous = consul.Consul(host="127.0.0.1", port=acl_agent.http_port)
        token = anonymous.acl.login(AUTH_METHOD, issuer.token(account))["SecretID"]
        clients.append(consul.Consul(host="127.0.0.1", port=acl_agent.http_port, token=token))
        return clients[-1]

    yield login
    for client in clients:
        client.acl.logout(client.token)


def test_greeter_logs_in_registers_deregisters_and_logs_out(acl_agent, issuer, greeter_factory):
    greeter = greeter_factory(
        **login_settings(issuer, acl_agent, "greeter"),
        service_id="example-service-acl",
        service_address="127.0.0.1",
        consul_check_interval="1s",
    )
    service = wait_until(lambda: registered(acl_agent, "example-service-acl"), what="registration")
    assert (service["Service"], service["Port"]) == ("example-service", greeter.port)
    wait_until(
        lambda: passing(acl_agent, "example-service", "example-service-acl"), what="gRPC check"
    )
    (token,) = login_tokens(acl_agent)
    assert [i["ServiceName"] for i in token["ServiceIdentities"]] == ["example-service"]
    assert token["ExpirationTime"], "a login token expires (the auth method's MaxTokenTTL)"
    greeter.stop()
    assert registered(acl_agent, "example-service-acl") is None
    assert login_tokens(acl_agent) == [], "stop logs out"


def test_books_api_under_gunicorn_logs_in_registers_and_deregisters(acl_agent, issuer):
    port = free_port()
    settings = login_settings(issuer, acl_agent, "books-api")
    process = start_gunicorn(
        port,
        CONSUL_HTTP_ADDR=f"http://{acl_agent.addr}",
        CONSUL_LOGIN_AUTH_METHOD=AUTH_METHOD,
        CONSUL_LOGIN_BEARER_TOKEN_FILE=settings["consul_login_bearer_token_file"],
        SERVICE_ID="books-api-acl",
        SERVICE_ADDRESS="127.0.0.1",
        CONSUL_CHECK_INTERVAL="1s",
    )
    try:
        service = wait_until(lambda: registered(acl_agent, "books-api-acl"), what="registration")
        assert (service["Service"], service["Port"]) == ("books-api", port)
        wait_until(lambda: passing(acl_agent, "books-api", "books-api-acl"), what="HTTP check")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert registered(acl_agent, "books-api-acl") is None
        assert login_tokens(acl_agent) == [], output
    finally:
        process.kill()
        process.wait()


def test_books_api_token_cannot_register_or_deregister_example_service(login_as, acl_agent):
    books_api, greeter = login_as("books-api"), login_as("greeter")
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        books_api.agent.service.register("example-service", service_id="rogue", port=1)
    assert greeter.agent.service.register("example-service", service_id="example-service-real")
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        books_api.agent.service.deregister("example-service-real")
    assert greeter.agent.service.deregister("example-service-real")
    assert books_api.agent.service.register("books-api", service_id="books-api-own", port=1)
    assert books_api.agent.service.deregister("books-api-own")


def test_greeter_token_cannot_register_books_api(login_as):
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        login_as("greeter").agent.service.register("books-api", service_id="rogue", port=1)


def test_anonymous_cannot_register_or_log_in_with_a_foreign_token(acl_agent, issuer, tmp_path):
    anonymous = consul.Consul(host="127.0.0.1", port=acl_agent.http_port)
    for name in ("example-service", "books-api", "anything"):
        with pytest.raises(consul.ACLPermissionDenied, match="anonymous token lacks permission"):
            anonymous.agent.service.register(name, service_id=f"rogue-{name}", port=1)
    # A ServiceAccount no binding rule names gets no token at all.
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.acl.login(AUTH_METHOD, issuer.token("some-other-account"))
    # A JWT signed by another key is refused.
    stranger = JwtIssuer(tmp_path)
    with pytest.raises(consul.ConsulException):
        anonymous.acl.login(AUTH_METHOD, stranger.token("greeter"))


def test_discovery_with_books_api_token(acl_agent, issuer, greeter_factory):
    greeter = logged_in_greeter(greeter_factory, issuer, acl_agent, "example-service-found")
    reply = books_api_app(issuer, acl_agent).test_client().get("/api/v1/greeting?name=x").get_json()
    assert reply == {"message": "Hello, x!", "instance": f"127.0.0.1:{greeter.port}"}


def test_revoked_tokens_are_replaced_without_restarting(
    acl_agent, issuer, greeter_factory, monkeypatch
):
    monkeypatch.setattr(consul_registration, "RESYNC_SECONDS", 0.5)
    earlier = {t["AccessorID"] for t in login_tokens(acl_agent)}  # other tests' watches
    greeter = logged_in_greeter(greeter_factory, issuer, acl_agent, "example-service-revoked")
    client = books_api_app(issuer, acl_agent).test_client()
    assert client.get("/api/v1/greeting?name=x").status_code == 200
    admin = management(acl_agent)
    revoked = {t["AccessorID"] for t in login_tokens(acl_agent)} - earlier
    assert len(revoked) == 2  # one each
    for accessor in revoked:
        admin.acl.token.delete(accessor)
    # The agent drops the greeter (as after a Consul restart): only a new token registers it again.
    admin.agent.service.deregister("example-service-revoked")
    wait_until(lambda: registered(acl_agent, "example-service-revoked"), what="re-registration")
    wait_until(
        lambda: passing(acl_agent, "example-service", "example-service-revoked"), what="check"
    )
    # books-api's watch learns of the change (a blocking query answers it) with its new token.
    new = lambda: {t["AccessorID"] for t in login_tokens(acl_agent)} - earlier - revoked  # noqa: E731
    wait_until(lambda: len(new()) == 2, what="both services to log in again")
    for _ in range(5):
        reply = client.get("/api/v1/greeting?name=x").get_json()
        assert reply["instance"] == f"127.0.0.1:{greeter.port}", "found through Consul"


@pytest.mark.timeout(180)
def test_expired_tokens_are_replaced_without_restarting(
    acl_agent, issuer, greeter_factory, monkeypatch
):
    """Tokens expire after the auth method's MaxTokenTTL (here Consul's minimum, 1 minute)."""
    monkeypatch.setattr(consul_registration, "RESYNC_SECONDS", 1.0)
    monkeypatch.setattr(greeter_client, "WATCH_WAIT", "5s")
    greeter = logged_in_greeter(
        greeter_factory, issuer, acl_agent, "example-service-expiring", SHORT_LIVED
    )
    client = books_api_app(issuer, acl_agent, SHORT_LIVED).test_client()
    assert client.get("/api/v1/greeting?name=x").status_code == 200
    first = {t["AccessorID"] for t in login_tokens(acl_agent, SHORT_LIVED)}
    assert len(first) == 2  # one each
    renewed = lambda: {t["AccessorID"] for t in login_tokens(acl_agent, SHORT_LIVED)} - first  # noqa: E731
    wait_until(lambda: len(renewed()) == 2, timeout=120, what="both services to log in again")
    assert registered(acl_agent, "example-service-expiring")
    reply = client.get("/api/v1/greeting?name=x").get_json()
    assert reply["instance"] == f"127.0.0.1:{greeter.port}", "still found through Consul"


def test_consul_down_at_start_up_still_serves_then_logs_in(consul_path, issuer, greeter_factory):
    agent = ConsulAgent(consul_path, management_token=str(uuid.uuid4()))
    greeter = greeter_factory(
        **login_settings(issuer, agent, "greeter"),
        service_id="example-service-late",
        service_address="127.0.0.1",
        consul_check_interval="1s",
    )
    books = create_app(
        BooksSettings(
            **login_settings(issuer, agent, "books-api"),
            greeter_addr=f"127.0.0.1:{greeter.port}",
            greeter_timeout_seconds=1,
        )
    ).test_client()
    assert books.get("/api/v1/greeting?name=x").status_code == 200, "serving while Consul is down"
    agent.start()
    try:
        set_up_logins(agent, issuer)
        wait_until(lambda: registered(agent, "example-service-late"), timeout=40, what="login")
        wait_until(lambda: passing(agent, "example-service", "example-service-late"), what="check")
    finally:
        greeter.stop()
        agent.stop()


def test_a_fixed_token_registers_as_its_service(acl_agent, greeter_factory):
    """External Consul: the operator gives each service a token (CONSUL_HTTP_TOKEN)."""
    admin = management(acl_agent)
    token = admin.acl.token.create(service_identities=[{"ServiceName": "example-service"}])
    try:
        greeter = greeter_factory(
            consul_http_addr=acl_agent.addr,
            consul_http_token=token["SecretID"],
            service_id="example-service-fixed",
            service_address="127.0.0.1",
        )
        wait_until(lambda: registered(acl_agent, "example-service-fixed"), what="registration")
        greeter.stop()
        assert registered(acl_agent, "example-service-fixed") is None
        assert admin.acl.token.read(token["AccessorID"]), "a fixed token is not logged out"
    finally:
        admin.acl.token.delete(token["AccessorID"])


def test_both_token_sources_are_refused():
    with pytest.raises(ValueError, match="expected one token source"):
        BooksSettings(consul_http_token="t", consul_login_auth_method="m")  # noqa: S106
