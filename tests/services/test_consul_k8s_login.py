"""The cluster's login path for real: a kube-apiserver (hack/cluster.sh) reviews the tokens.

The login setup Job's script (infra/consul_acl.py) runs here with the Consul CLI against a real
agent with ACLs on, using a reviewer ServiceAccount set up as the chart sets up
`consul-auth-method`; the tokens are the ServiceAccount tokens the API server issues, as the
kubelet projects them into the pods.
"""

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import consul
import pytest
from services_support import ConsulAgent, wait_until
from testkit import tool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
import consul_acl

pytestmark = pytest.mark.toolchain
APP_NS = "login-apps"
IDENTITIES = {"books-api": "books-api", "greeter": "example-service"}


@pytest.fixture(scope="module")
def accounts(cluster, tmp_path_factory):
    """The app ServiceAccounts, and a token reviewer's `token` and `ca.crt` in a folder."""
    cluster.kubectl("create", "namespace", APP_NS)
    for account in (*IDENTITIES, "stranger", "reviewer"):
        cluster.kubectl("-n", APP_NS, "create", "serviceaccount", account)
    reviewer = f"{APP_NS}:reviewer"
    cluster.kubectl(
        "create", "clusterrolebinding", "login-reviewer-delegator",
        "--clusterrole=system:auth-delegator", f"--serviceaccount={reviewer}",
    )  # fmt: skip
    cluster.kubectl(
        "create", "clusterrole", "login-reviewer", "--verb=get", "--resource=serviceaccounts"
    )
    cluster.kubectl(
        "create", "clusterrolebinding", "login-reviewer",
        "--clusterrole=login-reviewer", f"--serviceaccount={reviewer}",
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("reviewer")
    (folder / "token").write_text(token(cluster, "reviewer"))
    ca = cluster.kubectl(
        "config", "view", "--raw", "--minify",
        "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ).stdout  # fmt: skip
    (folder / "ca.crt").write_bytes(base64.b64decode(ca))
    yield folder
    for binding in ("login-reviewer-delegator", "login-reviewer"):
        cluster.kubectl("delete", "clusterrolebinding", binding, check=False)
    cluster.kubectl("delete", "clusterrole", "login-reviewer", check=False)
    cluster.kubectl("delete", "namespace", APP_NS, "--wait=false", check=False)


def token(cluster, account: str, *extra: str) -> str:
    return cluster.kubectl("-n", APP_NS, "create", "token", account, *extra).stdout.strip()


def api_server(cluster) -> str:
    return cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout


def run_setup(agent: ConsulAgent, cluster, reviewer: Path) -> subprocess.CompletedProcess:
    """The Job's container command, with the Job's environment pointed at this agent."""
    consul_bin = Path(tool("consul")).parent
    env = {
        **os.environ,
        "PATH": f"{consul_bin}{os.pathsep}{os.environ['PATH']}",
        "CONSUL_HTTP_ADDR": f"http://{agent.addr}",
        "CONSUL_HTTP_TOKEN": agent.management_token,
        "AUTH_METHOD": consul_acl.AUTH_METHOD,
        "MAX_TOKEN_TTL": consul_acl.MAX_TOKEN_TTL,
        "KUBERNETES_API": api_server(cluster),
        "REVIEWER_DIR": str(reviewer),
        "APP_NAMESPACE": APP_NS,
    }
    bindings = [f"{account}={service}" for account, service in IDENTITIES.items()]
    return subprocess.run(
        ["/bin/sh", "-c", consul_acl.LOGIN_SETUP_SCRIPT, "login-setup", *bindings],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def k8s_agent(consul_path, cluster, accounts):
    agent = ConsulAgent(consul_path, management_token=str(uuid.uuid4())).start()
    yield agent
    agent.stop()


def anonymous(agent: ConsulAgent) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def test_the_setup_script_is_idempotent_and_hides_the_reviewer_token(k8s_agent, cluster, accounts):
    for _ in range(2):
        result = run_setup(k8s_agent, cluster, accounts)
        assert result.returncode == 0, result.stderr
        assert (accounts / "token").read_text() not in result.stdout + result.stderr
    admin = consul.Consul(
        host="127.0.0.1", port=k8s_agent.http_port, token=k8s_agent.management_token
    )
    rules = admin.acl.binding_rule.list(auth_method=consul_acl.AUTH_METHOD)
    assert sorted((r["BindType"], r["BindName"], r["Selector"]) for r in rules) == [
        ("service", service, f'serviceaccount.namespace=="{APP_NS}" and '
         f'serviceaccount.name=="{account}"')
        for account, service in sorted(IDENTITIES.items(), key=lambda item: item[1])
    ]  # fmt: skip
    method = admin.acl.auth_method.read(consul_acl.AUTH_METHOD)
    assert (method["Type"], method["MaxTokenTTL"]) == ("kubernetes", "1h0m0s")


@pytest.mark.parametrize(("account", "identity"), sorted(IDENTITIES.items()))
def test_a_service_account_token_logs_in_as_its_service(
    k8s_agent, cluster, accounts, account, identity
):
    assert run_setup(k8s_agent, cluster, accounts).returncode == 0
    login = anonymous(k8s_agent).acl.login(consul_acl.AUTH_METHOD, token(cluster, account))
    assert [i["ServiceName"] for i in login["ServiceIdentities"]] == [identity]
    anonymous(k8s_agent).acl.logout(login["SecretID"])


def test_other_accounts_and_audiences_get_no_token(k8s_agent, cluster, accounts):
    """Why the pods' projected token keeps the API server's audience (infra/consul_acl.py)."""
    assert run_setup(k8s_agent, cluster, accounts).returncode == 0
    client = anonymous(k8s_agent)
    with pytest.raises(consul.ACLPermissionDenied):
        client.acl.login(consul_acl.AUTH_METHOD, token(cluster, "stranger"))
    with pytest.raises(consul.ConsulException, match="audiences"):
        client.acl.login(consul_acl.AUTH_METHOD, token(cluster, "greeter", "--audience", "consul"))


def test_the_greeter_registers_with_its_kubernetes_login(
    k8s_agent, cluster, accounts, greeter_factory, tmp_path
):
    assert run_setup(k8s_agent, cluster, accounts).returncode == 0
    bearer = tmp_path / "token"
    bearer.write_text(token(cluster, "greeter", "--duration", "10m"))
    greeter_factory(
        consul_http_addr=k8s_agent.addr,
        consul_login_auth_method=consul_acl.AUTH_METHOD,
        consul_login_bearer_token_file=bearer,
        service_id="example-service-k8s",
        service_address="127.0.0.1",
    )
    wait_until(
        lambda: "example-service-k8s" in k8s_agent.get("/v1/agent/services"),
        what="registration with the Kubernetes login",
    )
