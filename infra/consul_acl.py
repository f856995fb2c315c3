"""The services' Consul logins: a Kubernetes auth method and one binding rule per ServiceAccount.

Each service pod logs in (service_common.consul_session) with a projected ServiceAccount token
and gets a Consul token bound to its service identity: write on its own service, read on the
catalog (Consul's built-in `builtin/service` templated policy). No long-lived secret exists for
a service, and the tokens expire after MAX_TOKEN_TTL (the services log in again).

Why a Job: with connectInject off, consul-k8s creates no auth method for services, only the one
for its own components. The auth method and rules need a management token, which only exists
inside the cluster (the chart's Secret `consul-bootstrap-acl-token`), and Consul's API is not
reachable from where `pulumi up` runs; the pulumi-consul provider would need both. So a Job in
Consul's namespace runs the Consul CLI with that token (LOGIN_SETUP_SCRIPT). It is idempotent
(update or create the auth method, replace the rules) and runs again whenever its spec changes.
The reviewer credentials are the chart's own `consul-auth-method` ServiceAccount token
(system:auth-delegator, and get on ServiceAccounts, which Consul reads during a login).

Why the projected token has the API server's audience and not `consul`: Consul's `kubernetes`
auth method sends the token to a TokenReview without audiences (consul
agent/consul/authmethod/kubeauth/k8s.go), so the API server accepts only tokens meant for
itself: a token with audience `consul` fails ("token audiences ["consul"] is invalid for the
target audiences [...]", seen with Consul 1.22.7 and Kubernetes 1.34). The token is still
short-lived (TOKEN_EXPIRATION_SECONDS, rotated by the kubelet), bound to its pod, and its
ServiceAccount has no RBAC rights. Consul's `jwt` auth method would check a `consul` audience,
but it needs the cluster's signing keys, which the API server serves only to authenticated
clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from consul_server import AUTH_METHOD_SECRET, BOOTSTRAP_TOKEN_SECRET
from microservice import locked_down_container

COMPONENT_TYPE = "consul-microservices:index:ConsulServiceLogins"
AUTH_METHOD = "consul-microservices-services"
MAX_TOKEN_TTL = "1h"  # noqa: S105 (a duration)
KUBERNETES_API = "https://kubernetes.default.svc"
TOKEN_EXPIRATION_SECONDS = 600  # the shortest the API server issues
# The folder of the services' CONSUL_LOGIN_BEARER_TOKEN_FILE (its default: <TOKEN_DIR>/token).
TOKEN_DIR = "/var/run/secrets/consul"  # noqa: S105 (a path)
REVIEWER_DIR = "/var/run/secrets/consul-auth-method"
SETUP_LABELS = {"app.kubernetes.io/name": "consul-service-logins"}
# A few consul CLI calls, once per up: small bounds, like any container of the app's (policy/).
SETUP_RESOURCES = k8s.core.v1.ResourceRequirementsArgs(
    requests={"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "16Mi"},
    limits={"cpu": "500m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
)

# Arguments: ServiceAccount=service pairs. Env: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, AUTH_METHOD,
# MAX_TOKEN_TTL, KUBERNETES_API, REVIEWER_DIR, APP_NAMESPACE.
LOGIN_SETUP_SCRIPT = r"""
set -eu
until consul acl auth-method list >/dev/null; do echo "waiting for Consul's ACLs"; sleep 5; done
if consul acl auth-method read -name "$AUTH_METHOD" >/dev/null 2>&1; then
  verb=update type=
else
  verb=create type=-type=kubernetes
fi
# Its output would show the reviewer's token: only errors are printed.
consul acl auth-method "$verb" $type -name "$AUTH_METHOD" -max-token-ttl "$MAX_TOKEN_TTL" \
  -kubernetes-host "$KUBERNETES_API" -kubernetes-ca-cert "@$REVIEWER_DIR/ca.crt" \
  -kubernetes-service-account-jwt "$(cat "$REVIEWER_DIR/token")" >/dev/null
echo "auth method $AUTH_METHOD: $verb done"
rules=$(consul acl binding-rule list -method "$AUTH_METHOD" | sed -n 's/^\([0-9a-f-]*\):$/\1/p')
for id in $rules; do
  consul acl binding-rule delete -id "$id" >/dev/null
done
for binding in "$@"; do
  account=${binding%%=*} service=${binding#*=}
  consul acl binding-rule create -method "$AUTH_METHOD" -bind-type service \
    -bind-name "$service" -description "ServiceAccount $APP_NAMESPACE/$account" \
    -selector "serviceaccount.namespace==\"$APP_NAMESPACE\" and serviceaccount.name==\"$account\""
done
"""


@dataclass(frozen=True)
class ConsulServiceLoginsArgs:
    """`identities`: ServiceAccount name in `app_namespace` -> the Consul service it may write."""

    consul_namespace: pulumi.Input[str]
    consul_http_addr: pulumi.Input[str]
    image: str
    app_namespace: pulumi.Input[str]
    identities: Mapping[str, str]


class ConsulServiceLogins(pulumi.ComponentResource):
    """The auth method the services log in to; `job` completes once it and its rules exist."""

    auth_method: str
    job: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: ConsulServiceLoginsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        metadata = k8s.meta.v1.ObjectMetaArgs(
            name=name, namespace=args.consul_namespace, labels=SETUP_LABELS
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=metadata, automount_service_account_token=False, opts=child
        )
        self.job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                namespace=args.consul_namespace, labels=SETUP_LABELS
            ),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=6,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=SETUP_LABELS),
                    spec=_pod_spec(args, account),
                ),
            ),
            opts=child,
        )
        self.auth_method = AUTH_METHOD
        self.register_outputs({"auth_method": self.auth_method})


def _pod_spec(
    args: ConsulServiceLoginsArgs, account: k8s.core.v1.ServiceAccount
) -> k8s.core.v1.PodSpecArgs:
    env = {
        "CONSUL_HTTP_ADDR": args.consul_http_addr,
        "AUTH_METHOD": AUTH_METHOD,
        "MAX_TOKEN_TTL": MAX_TOKEN_TTL,
        "KUBERNETES_API": KUBERNETES_API,
        "REVIEWER_DIR": REVIEWER_DIR,
        "APP_NAMESPACE": args.app_namespace,
    }
    management_token = k8s.core.v1.EnvVarSourceArgs(
        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=BOOTSTRAP_TOKEN_SECRET, key="token")
    )
    container = k8s.core.v1.ContainerArgs(
        name="setup",
        image=args.image,
        command=["/bin/sh", "-c", LOGIN_SETUP_SCRIPT, "login-setup"],
        args=[f"{sa}={service}" for sa, service in sorted(args.identities.items())],
        env=[
            *(k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in env.items()),
            k8s.core.v1.EnvVarArgs(name="CONSUL_HTTP_TOKEN", value_from=management_token),
        ],
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="reviewer", mount_path=REVIEWER_DIR, read_only=True)
        ],
        resources=SETUP_RESOURCES,
        security_context=locked_down_container(),
    )
    return k8s.core.v1.PodSpecArgs(
        service_account_name=account.metadata.name,
        automount_service_account_token=False,
        restart_policy="OnFailure",
        containers=[container],
        volumes=[
            k8s.core.v1.VolumeArgs(
                name="reviewer",
                secret=k8s.core.v1.SecretVolumeSourceArgs(secret_name=AUTH_METHOD_SECRET),
            )
        ],
    )
