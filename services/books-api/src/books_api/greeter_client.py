"""Calls ExampleService on a healthy instance: found in Consul, or GREETER_ADDR when Consul is off.

One deadline covers discovery and every attempt; a failing instance hands over to the next one.
"""

import logging
import random
import threading
import time
from collections import OrderedDict

import consul
import example_pb2
import example_pb2_grpc
import grpc
import requests

log = logging.getLogger(__name__)
MAX_CHANNELS = 32


class GreeterUnavailable(Exception):
    """No instance answered before the deadline."""


class InvalidGreeting(ValueError):
    """The greeter refused the input (INVALID_ARGUMENT); its detail names the field."""


class GreeterClient:
    def __init__(
        self,
        timeout: float,
        consul_client: consul.Consul | None = None,
        service_name: str = "example-service",
        static_addr: str | None = None,
    ) -> None:
        self._timeout = timeout
        self._consul = consul_client
        self._service_name = service_name
        self._static_addr = static_addr
        self._channels: OrderedDict[str, grpc.Channel] = OrderedDict()
        self._lock = threading.Lock()

    def greet(self, name: str) -> tuple[str, str]:
        """Return (message, address of the instance that answered)."""
        deadline = time.monotonic() + self._timeout
        candidates = self._instances()
        failures = []
        for index, addr in enumerate(candidates):
            # Share what is left fairly, so one hanging instance cannot eat the whole deadline.
            budget = (deadline - time.monotonic()) / (len(candidates) - index)
            if budget <= 0:
                break
            stub = example_pb2_grpc.ExampleServiceStub(self._channel(addr))
            try:
                reply = stub.GetServerResponse(
                    example_pb2.ClientMessage(client_message=name), timeout=budget
                )
                return reply.message, addr
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidGreeting(err.details()) from None
                failures.append(f"{addr}: {err.code().name}")
                log.warning(
                    "greeter instance failed", extra={"instance": addr, "code": err.code().name}
                )
        reason = "; ".join(failures) or "no healthy instance"
        raise GreeterUnavailable(f"{self._service_name} unavailable ({reason})")

    def _instances(self) -> list[str]:
        """Healthy instances from Consul in random order; GREETER_ADDR when Consul is off or down.

        The Consul client's own timeout bounds the lookup (the app gives it the greeting deadline).
        """
        if self._consul is None:
            return [self._static_addr] if self._static_addr else []
        try:
            _, entries = self._consul.health.service(self._service_name, passing=True)
        except (consul.ConsulException, requests.RequestException) as err:
            log.warning("Consul lookup failed", extra={"error": str(err)})
            return [self._static_addr] if self._static_addr else []
        found = [
            _host_port(e["Service"]["Address"] or e["Node"]["Address"], e["Service"]["Port"])
            for e in entries
        ]
        random.shuffle(found)
        return found

    def _channel(self, addr: str) -> grpc.Channel:
        """One long-lived channel per instance, the least recently used closed past MAX_CHANNELS."""
        with self._lock:
            channel = self._channels.pop(addr, None) or grpc.insecure_channel(addr)
            self._channels[addr] = channel
            if len(self._channels) > MAX_CHANNELS:
                self._channels.popitem(last=False)[1].close()
            return channel


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
