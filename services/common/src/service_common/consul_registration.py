"""Keeps one service instance registered in Consul through the agent HTTP API (py-consul).

Consul being down must never stop a service from serving, so registration runs in a background
thread: it retries with backoff, registers again if the agent forgets the instance, and
deregisters on stop, then logs out. Each service only states its name and its check. Its calls
carry the service's own ACL token (service_common.consul_session).

Why a fork waits for the thread's Consul call: gunicorn's master runs this thread and forks its
workers. A fork taken while the thread is inside a call (its first one imports modules lazily)
hands the worker locks that no thread of the worker will ever release, and the worker's own
Consul watch then hung on them (found by the e2e: every greeting waited out its deadline).
"""

import logging
import os
import socket
import threading

import consul
import requests

from service_common.consul_session import ConsulSession

log = logging.getLogger(__name__)
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, RESYNC_SECONDS = 0.5, 30.0, 30.0
# Short Consul timeouts keep shutdown (join, then deregister) well inside the pod's grace period.
CONSUL_TIMEOUT_SECONDS = 5


def own_address(configured: str | None) -> str:
    """The address Consul advertises and checks: SERVICE_ADDRESS (the pod IP), else the host's."""
    return configured or socket.gethostbyname(socket.gethostname())


def check_timing(interval: str) -> dict[str, str]:
    """How often Consul checks an instance, and when it drops one that stays critical."""
    return {"interval": interval, "timeout": "2s", "deregister": "1m"}


def http_registration(settings, *, port: int, check_path: str) -> "Registration | None":
    """An HTTP service's: CONSUL_SERVICE_NAME with an HTTP check on `check_path` (its liveness
    path); None without Consul (CONSUL_HTTP_ADDR unset: a service run on a laptop)."""
    if not settings.consul_http_addr:
        return None
    address = own_address(settings.service_address)
    return Registration(
        settings,
        name=settings.consul_service_name,
        service_id=settings.service_id,
        address=address,
        port=port,
        check=consul.Check.http(
            f"http://{address}:{port}{check_path}", **check_timing(settings.consul_check_interval)
        ),
    )


class Registration:
    def __init__(self, settings, *, name: str, service_id: str, address: str, port: int, check):
        """`settings` (ServiceSettings) say where Consul is and where the token comes from.

        Start it once the instance serves: it registers as passing. A new check is otherwise
        critical until its first run, up to an interval later, and right after a deploy every
        instance was new, so callers found none healthy while Kubernetes had them all ready.
        """
        self._session = ConsulSession(settings, timeout=CONSUL_TIMEOUT_SECONDS)
        self._id = service_id
        self._service = {
            "name": name,
            "service_id": service_id,
            "address": address,
            "port": port,
            "check": {**check, "status": "passing"},
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_registered, name="consul", daemon=True)
        self._in_call = threading.Lock()
        os.register_at_fork(
            before=self._in_call.acquire,
            after_in_parent=self._in_call.release,
            after_in_child=self._in_call.release,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._session.call(lambda client: client.agent.service.deregister(self._id))
            log.info("deregistered from Consul", extra={"service_id": self._id})
        except (consul.ConsulException, requests.RequestException) as err:
            log.warning("Consul deregistration failed", extra={"error": str(err)})
        self._session.logout()

    def _keep_registered(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while not self._stop.is_set():
            try:
                with self._in_call:
                    known = self._session.call(self._registered_or_register)
                if not known:
                    log.info("registered in Consul", extra={"service_id": self._id})
                retry, pause = FIRST_RETRY_SECONDS, RESYNC_SECONDS
            except (consul.ConsulException, requests.RequestException) as err:
                log.warning(
                    "Consul registration failed", extra={"error": str(err), "retry_in": retry}
                )
                retry, pause = min(retry * 2, MAX_RETRY_SECONDS), retry
            self._stop.wait(pause)

    def _registered_or_register(self, client: consul.Consul) -> bool:
        """Whether the agent already knew the instance; registers it if not."""
        if self._id in client.agent.services():
            return True
        client.agent.service.register(**self._service)
        return False
