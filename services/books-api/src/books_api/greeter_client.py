"""Calls ExampleService on a healthy instance: found in Consul, or GREETER_ADDR when Consul is off.

The healthy instances are kept current by a Consul blocking query in a background thread, so a
greeting costs no Consul round-trip; its queries carry books-api's own ACL token. One deadline
covers every attempt; a failing instance hands over to the next one. Each attempt is a span of its
own when tracing is on, whose context reaches the greeter in the call's metadata.
"""

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import consul
import example_pb2
import example_pb2_grpc
import grpc
import requests
from service_common import tracing
from service_common.consul_session import ConsulSession

log = logging.getLogger(__name__)
GREETING_METHOD = "ExampleService/GetServerResponse"
MAX_CHANNELS = 32
# A blocking query returns as soon as the passing set changes, or after this long with no change.
WATCH_WAIT = "30s"
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 5.0


class GreeterUnavailable(Exception):
    """No instance answered before the deadline."""


class InvalidGreeting(ValueError):
    """The greeter refused the input (INVALID_ARGUMENT); its detail names the field."""


class HealthyInstances:
    """The passing instances of one service, as `host:port`, kept current from Consul.

    The watch starts on first use (under gunicorn: in each worker, after the fork). `current()`
    is None while Consul cannot be reached, so the caller falls back to its static address.
    """

    def __init__(self, session: ConsulSession, service_name: str) -> None:
        self._session = session
        self._service_name = service_name
        self._instances: list[str] | None = None
        self._answered = threading.Event()  # the first lookup has succeeded or failed
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def current(self, timeout: float) -> list[str] | None:
        """The latest passing set; waits up to `timeout` for the very first lookup only."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name=f"consul-watch-{self._service_name}", daemon=True
                    )
                    self._thread.start()
        self._answered.wait(timeout)
        return self._instances

    def _watch(self) -> None:
        index, retry = None, FIRST_RETRY_SECONDS
        while True:
            try:
                new_index, entries = self._session.call(
                    lambda client, index=index: client.health.service(
                        self._service_name, passing=True, index=index, wait=WATCH_WAIT
                    )
                )
                # An index that goes backwards (e.g. a Consul restart) starts over (Consul's docs).
                index = new_index if not index or int(new_index) >= int(index) else None
                self._instances = [
                    _host_port(
                        e["Service"]["Address"] or e["Node"]["Address"], e["Service"]["Port"]
                    )
                    for e in entries
                ]
                retry = FIRST_RETRY_SECONDS
                self._answered.set()
            except (consul.ConsulException, requests.RequestException) as err:
                if self._instances is not None or not self._answered.is_set():
                    log.warning("Consul lookup failed", extra={"error": str(err)})
                self._instances, index = None, None
                self._answered.set()
                time.sleep(retry)
                retry = min(retry * 2, MAX_RETRY_SECONDS)


@dataclass(eq=False)
class _Lease:
    """A channel and the calls using it; a retired channel closes when its last call ends."""

    channel: grpc.Channel
    users: int = 0
    retired: bool = False


class Channels:
    """One long-lived channel per instance, the least recently used retired past MAX_CHANNELS.

    A channel is replaced, never closed under a call: `use` leases it for one call, and a channel
    that was retired (replaced by `redial`, or evicted) is closed by whoever ends its last call.
    Closing it earlier would cancel the calls other threads still make on it, and make their
    next ones raise ValueError ("Cannot invoke RPC on closed channel!").
    """

    def __init__(self, limit: int = MAX_CHANNELS) -> None:
        self._limit = limit
        self._live: OrderedDict[str, _Lease] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def use(self, addr: str) -> Iterator[grpc.Channel]:
        with self._lock:
            lease = self._live.pop(addr, None) or _Lease(grpc.insecure_channel(addr))
            self._live[addr] = lease
            lease.users += 1
            evicted = [
                self._retire(self._live.popitem(last=False)[1])
                for _ in range(len(self._live) - self._limit)
            ]
        _close(evicted)
        try:
            yield lease.channel
        finally:
            with self._lock:
                lease.users -= 1
                done = self._closable(lease)
            _close([done])

    def redial(self, addr: str, channel: grpc.Channel) -> None:
        """Retire `channel` of an instance that was unavailable: the next call dials afresh.

        A channel that failed to connect waits out gRPC's reconnect backoff (up to 2 minutes,
        growing) and fails calls fast meanwhile, long after the instance is back. A new channel
        connects at once, so a restarted instance answers the first greeting after it is up.
        Another thread may have redialled already: only the channel that failed is retired.
        """
        with self._lock:
            lease = self._live.get(addr)
            if lease is None or lease.channel is not channel:
                return
            del self._live[addr]
            done = self._retire(lease)
        _close([done])

    def _retire(self, lease: _Lease) -> _Lease | None:
        lease.retired = True
        return self._closable(lease)

    @staticmethod
    def _closable(lease: _Lease) -> _Lease | None:
        return lease if lease.retired and lease.users == 0 else None


def _close(leases: list[_Lease | None]) -> None:
    for lease in leases:
        if lease is not None:
            lease.channel.close()


class GreeterClient:
    def __init__(
        self,
        timeout: float,
        consul_session: ConsulSession | None = None,
        service_name: str = "example-service",
        static_addr: str | None = None,
    ) -> None:
        self._timeout = timeout
        self._healthy = HealthyInstances(consul_session, service_name) if consul_session else None
        self._service_name = service_name
        self._static_addr = static_addr
        self._channels = Channels()

    def greet(self, name: str) -> tuple[str, str]:
        """Return (message, address of the instance that answered)."""
        deadline = time.monotonic() + self._timeout
        candidates = self._instances(self._timeout)
        failures = []
        for index, addr in enumerate(candidates):
            # Share what is left fairly, so one hanging instance cannot eat the whole deadline.
            budget = (deadline - time.monotonic()) / (len(candidates) - index)
            if budget <= 0:
                break
            with self._channels.use(addr) as channel:
                stub = example_pb2_grpc.ExampleServiceStub(channel)
                try:
                    with tracing.grpc_client_call(GREETING_METHOD, addr) as metadata:
                        reply = stub.GetServerResponse(
                            example_pb2.ClientMessage(client_message=name),
                            timeout=budget,
                            metadata=metadata,
                        )
                    return reply.message, addr
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        raise InvalidGreeting(err.details()) from None
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        self._channels.redial(addr, channel)
                    failures.append(f"{addr}: {err.code().name}")
                    log.warning(
                        "greeter instance failed", extra={"instance": addr, "code": err.code().name}
                    )
        reason = "; ".join(failures) or "no healthy instance"
        raise GreeterUnavailable(f"{self._service_name} unavailable ({reason})")

    def _instances(self, timeout: float) -> list[str]:
        """Healthy instances in random order; GREETER_ADDR when Consul is off, unreachable or
        lists none passing. A Consul that restarted without its data lists none until the
        instances register again; the Service behind GREETER_ADDR still sends to ready pods,
        and has none to send to when the greeter is really down."""
        found = self._healthy.current(timeout) if self._healthy else None
        if not found:
            return [self._static_addr] if self._static_addr else []
        return random.sample(found, len(found))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
