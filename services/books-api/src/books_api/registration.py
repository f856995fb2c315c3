"""Consul registration of this instance, run by the gunicorn master (hooks in gunicorn.conf.py).

py-consul does the HTTP; ours is the policy. Consul down must not stop serving, so a background
thread retries with backoff, registers again if the agent forgets us, and deregisters on stop.
"""

import logging
import socket
import threading

import consul
import requests

from books_api.config import Settings

log = logging.getLogger(__name__)
BACKOFF_FIRST, BACKOFF_MAX, RESYNC_EVERY = 0.5, 30.0, 30.0


class Registration:
    def __init__(self, settings: Settings) -> None:
        addr = settings.consul_http_addr
        own_address = settings.service_address or socket.gethostbyname(socket.gethostname())
        # Short timeouts keep shutdown (join, then deregister) well inside the pod's grace period.
        self.client = consul.Consul(
            host=addr.host, port=addr.port, scheme=addr.scheme, connections_timeout=5
        )
        self.service_id = settings.service_id
        self.definition = {
            "name": "books-api",
            "service_id": self.service_id,
            "address": own_address,
            "port": settings.port,
            "check": consul.Check.http(
                f"http://{own_address}:{settings.port}/healthz",
                interval=settings.consul_check_interval,
                timeout="2s",
                deregister="1m",
            ),
        }
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="consul-registration", daemon=True)

    def run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self.stopped.is_set():
            try:
                if self.service_id not in self.client.agent.services():
                    self.client.agent.service.register(**self.definition)
                    log.info("registered in Consul", extra={"service_id": self.service_id})
            except (consul.ConsulException, requests.RequestException) as err:
                log.warning(
                    "Consul registration failed", extra={"error": str(err), "retry_in": backoff}
                )
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                backoff = BACKOFF_FIRST
                self.stopped.wait(RESYNC_EVERY)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        try:
            self.client.agent.service.deregister(self.service_id)
            log.info("deregistered from Consul", extra={"service_id": self.service_id})
        except (consul.ConsulException, requests.RequestException) as err:
            log.warning("Consul deregistration failed", extra={"error": str(err)})
