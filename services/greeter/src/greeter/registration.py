"""Consul registration (py-consul): retried with backoff, redone if the agent forgets it, removed on
stop.

Consul being down must never stop the server, so all of this runs in a background thread.
"""

import logging
import socket
import threading

import consul
import requests

from greeter.config import Settings

log = logging.getLogger(__name__)
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, RESYNC_SECONDS = 0.5, 30.0, 30.0


class Registration:
    def __init__(self, settings: Settings, port: int) -> None:
        addr = settings.consul_http_addr
        own_address = settings.service_address or socket.gethostbyname(socket.gethostname())
        # Short timeouts keep shutdown (join, then deregister) well inside the pod's grace period.
        self._client = consul.Consul(
            host=addr.host, port=addr.port, scheme=addr.scheme, connections_timeout=5
        )
        self._id = settings.service_id
        self._service = {
            "name": "example-service",
            "service_id": settings.service_id,
            "address": own_address,
            "port": port,
            "check": consul.Check.grpc(
                f"{own_address}:{port}/ExampleService",
                interval=settings.consul_check_interval,
                timeout="2s",
                deregister="1m",
            ),
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_registered, name="consul", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._client.agent.service.deregister(self._id)
            log.info("deregistered from Consul", extra={"service_id": self._id})
        except (consul.ConsulException, requests.RequestException) as err:
            log.warning("Consul deregistration failed", extra={"error": str(err)})

    def _keep_registered(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while not self._stop.is_set():
            try:
                if self._id not in self._client.agent.services():
                    self._client.agent.service.register(**self._service)
                    log.info("registered in Consul", extra={"service_id": self._id})
                retry, pause = FIRST_RETRY_SECONDS, RESYNC_SECONDS
            except (consul.ConsulException, requests.RequestException) as err:
                log.warning(
                    "Consul registration failed", extra={"error": str(err), "retry_in": retry}
                )
                retry, pause = min(retry * 2, MAX_RETRY_SECONDS), retry
            self._stop.wait(pause)
