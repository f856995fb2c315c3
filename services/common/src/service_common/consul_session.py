"""A py-consul client that carries this service's own Consul ACL token.

The token comes from one of two places (ServiceSettings):
- a login (CONSUL_LOGIN_AUTH_METHOD): the service presents the bearer token read from
  CONSUL_LOGIN_BEARER_TOKEN_FILE to Consul's auth method and gets a token bound to its own
  service identity. In Kubernetes that file is a projected ServiceAccount token with audience
  `consul` that the kubelet rotates, so no long-lived secret exists for the service;
- a fixed token (CONSUL_HTTP_TOKEN), for a Consul outside the cluster.

A login token is replaced when Consul no longer knows it ("ACL not found": it expired, was
revoked, or Consul lost its state): the call logs in again, reading the file afresh, and is
retried once. Login failures raise like any Consul call, so callers keep their retry paths and a
Consul that is down at start-up never stops the service from serving.
"""

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import consul
import requests

from service_common.settings import ServiceSettings

log = logging.getLogger(__name__)
Result = TypeVar("Result")
# Consul's answer (403) for a token it does not hold, as opposed to "Permission denied".
ACL_NOT_FOUND = "ACL not found"


class ConsulSession:
    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        addr = settings.consul_http_addr
        fixed = settings.consul_http_token
        self.client = consul.Consul(
            host=addr.host,
            port=addr.port,
            scheme=addr.scheme,
            token=fixed.get_secret_value() if fixed else None,
            connections_timeout=timeout,
        )
        self._auth_method = settings.consul_login_auth_method
        self._bearer_token_file = settings.consul_login_bearer_token_file
        self._login_lock = threading.Lock()

    def call(self, request: Callable[[consul.Consul], Result]) -> Result:
        """`request(client)` with a token Consul knows: logs in first, or again if it was lost."""
        token = self.client.token
        if self._auth_method and not token:
            token = self._login(stale=None)
        try:
            return request(self.client)
        except consul.ACLPermissionDenied as err:
            if not (self._auth_method and ACL_NOT_FOUND in str(err)):
                raise
            log.info("Consul no longer knows our token: logging in again")
            self._login(stale=token)
            return request(self.client)

    def logout(self) -> None:
        """Destroy a login token on the way out (a fixed token is the operator's to keep)."""
        token = self.client.token
        if not (self._auth_method and token):
            return
        try:
            self.client.acl.logout(token)
        except (consul.ConsulException, requests.RequestException) as err:
            log.warning("Consul logout failed", extra={"error": str(err)})
        self.client.token = None

    def _login(self, stale: str | None) -> str:
        """A new token, unless another thread already replaced `stale` (then that one)."""
        with self._login_lock:
            if self.client.token and self.client.token != stale:
                return self.client.token
            try:
                bearer = Path(self._bearer_token_file).read_text().strip()
            except OSError as err:
                raise consul.ConsulException(f"cannot read the login bearer token: {err}") from None
            self.client.token = None
            result = self.client.acl.login(self._auth_method, bearer)
            self.client.token = result["SecretID"]
            log.info(
                "logged in to Consul",
                extra={"auth_method": self._auth_method, "accessor_id": result["AccessorID"]},
            )
            return self.client.token
