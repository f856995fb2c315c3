"""RED metrics and a trace span for every RPC a gRPC service serves, by method and status code.

The shared server (service_common.grpc_server) puts this interceptor first, so it sees every call
of every servicer on it (the service's own, health, reflection) as the client does, including a
request that does not decode (INVALID_ARGUMENT, from grpc_decoding behind it). A method the server
does not have is answered UNIMPLEMENTED by grpcio without a handler, and is not counted: its name
is the client's to choose, and would grow the label space without bound.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from prometheus_client import Histogram

from service_common import tracing
from service_common.grpc_interceptor import WrapsEachMethodOnce

# One histogram serves rate, errors and latency: its _count series counts calls by status code.
CALLS = Histogram(
    "grpc_server_handling_seconds",
    "gRPC calls served, by latency",
    ["grpc_service", "grpc_method", "grpc_code"],
)
METADATA = tracing.MetadataGetter()
# The codes that are the server's fault, as OpenTelemetry marks a server span failed; the others
# (INVALID_ARGUMENT, NOT_FOUND, ...) are the caller's.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
# The handler kinds, whether each streams its responses, and how to make one.
KINDS = (
    ("unary_unary", False, grpc.unary_unary_rpc_method_handler),
    ("unary_stream", True, grpc.unary_stream_rpc_method_handler),
    ("stream_unary", False, grpc.stream_unary_rpc_method_handler),
    ("stream_stream", True, grpc.stream_stream_rpc_method_handler),
)


class _Method:
    """One method's span name and attributes, and its labelled series by code."""

    def __init__(self, full_name: str) -> None:
        self.name = full_name.lstrip("/")  # /package.Service/Method
        self.attributes = tracing.rpc_attributes(self.name)
        self._series: dict[grpc.StatusCode, Histogram] = {}

    def series(self, code: grpc.StatusCode) -> Histogram:
        """The labelled child, looked up once: `labels()` costs as much as the update itself."""
        child = self._series.get(code)
        if child is None:
            service, method = self.attributes["rpc.service"], self.attributes["rpc.method"]
            child = self._series.setdefault(code, CALLS.labels(service, method, code.name))
        return child

    @contextmanager
    def observed(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Times the call and counts it by the code it ends with: the one the servicer set or
        aborted with, UNKNOWN for an exception (as grpcio answers it), else OK."""
        started = time.perf_counter()
        code = None
        with tracing.server_span(
            self.name, context.invocation_metadata(), METADATA, self.attributes
        ) as span:
            try:
                yield
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                code = code or context.code() or grpc.StatusCode.OK
                tracing.finish(span, tracing.GRPC_STATUS, code.value[0], code in SERVER_FAULTS)
                self.series(code).observe(time.perf_counter() - started)


def _unary(behavior: Callable, method: _Method) -> Callable:
    def call(request, context):
        with method.observed(context):
            return behavior(request, context)

    return call


def _streaming(behavior: Callable, method: _Method) -> Callable:
    def call(request, context):
        with method.observed(context):
            yield from behavior(request, context)

    return call


def _observing(handler: grpc.RpcMethodHandler, method: _Method) -> grpc.RpcMethodHandler:
    """The same handler (of whichever of the four kinds it is), observed."""
    behavior, streams, make = next(
        (getattr(handler, kind), streams, make)
        for kind, streams, make in KINDS
        if getattr(handler, kind) is not None
    )
    return make(
        (_streaming if streams else _unary)(behavior, method),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ObserveCalls(WrapsEachMethodOnce):
    """RED metrics and a span for every call of every method."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return _observing(handler, _Method(method))
