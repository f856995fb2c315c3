"""OpenTelemetry traces (the Python SDK): a span around each request or RPC a service serves and
each gRPC call it makes, the W3C trace context carried in HTTP headers and gRPC metadata, exported
over OTLP/gRPC to the collector OTEL_EXPORTER_OTLP_ENDPOINT names.

Off (the variable unset): no SDK provider, no exporter, and each hook below costs the test of one
attribute. On: one trace in ten that starts here is recorded (SAMPLE_RATIO, below, says why), and
a finished span goes into the BatchSpanProcessor's bounded in-memory queue, which a thread of its
own exports in batches, so a collector that is down or slow costs a request nothing; the exporter
gives a batch up after OTEL_EXPORTER_OTLP_TIMEOUT (10 s), and a full queue drops the oldest spans.
The SDK reads its other standard variables itself (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG,
OTEL_BSP_*, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_HEADERS, ...).

The spans are made here, where the metrics already time each request, rather than by
opentelemetry-instrumentation-flask and -grpc: each of those pins opentelemetry-semantic-conventions
exactly, and the newest Flask one (0.66b1) does not pin the one the SDK 1.45.2 needs (0.66b2).

Under gunicorn `configure` runs in each worker after the fork (service_common.gunicorn_hooks), so
the export thread is the worker's own; a gRPC service configures it in `grpc_server.serve`.
"""

import os
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER as SAMPLER_VARIABLE
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, StatusCode

# How long a stopping process waits for its last spans to be exported: a stop must not wait out
# the exporter's retries against a collector that is down.
FLUSH_SECONDS = 2.0
# The share of the traces that start here (no sampled caller) that are recorded, unless
# OTEL_TRACES_SAMPLER says otherwise. A recorded span costs ~45 us of CPU (~20 to make, ~25 for
# the OTLP encoder), over a tenth of a books listing under gunicorn (~390 us); one not recorded,
# ~8 us. A caller's decision is followed either way (parent-based), so a trace is kept whole.
SAMPLE_RATIO = 0.1
GRPC_STATUS = "rpc.grpc.status_code"
_OFF = nullcontext()


class _State:
    """The process's provider and tracer; None while tracing is off."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None


_state = _State()


def configure(settings) -> None:
    """Tracing on when `settings` (ServiceSettings) name a collector; otherwise nothing."""
    if settings.otel_exporter_otlp_endpoint is None:
        return
    name = settings.otel_service_name or settings.consul_service_name
    # None: the SDK's own, from OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
    sampler = (
        None if SAMPLER_VARIABLE in os.environ else ParentBased(TraceIdRatioBased(SAMPLE_RATIO))
    )
    # The atexit shutdown the SDK registers by default waits without a bound: `shutdown` is ours.
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({SERVICE_NAME: name}), shutdown_on_exit=False
    )
    exporter = OTLPSpanExporter(endpoint=str(settings.otel_exporter_otlp_endpoint))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _state.provider, _state.tracer = provider, provider.get_tracer(__name__)


def shutdown(timeout: float = FLUSH_SECONDS) -> None:
    """Export the spans still queued, waiting at most `timeout`; the process may exit then."""
    if _state.provider is None:
        return
    flushing = threading.Thread(target=_state.provider.shutdown, name="otel-flush", daemon=True)
    flushing.start()
    flushing.join(timeout)


class _Current:
    """Makes `span` current for a block and ends it after: what start_as_current_span does,
    without its generator-based context managers, which cost a request about as much again as
    the span. The caller records the outcome on the span (`finish`) before the block ends."""

    __slots__ = ("_token", "span")

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        self._token = context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *_) -> None:
        self.span.end()
        context.detach(self._token)


def server_span(
    name: str, carrier, getter: Getter, attributes: Mapping[str, str]
) -> AbstractContextManager[Span | None]:
    """The span of one request served, the child of the caller's span that `carrier` (headers,
    metadata) propagates; it is current within, so logs and calls made within carry its ids.
    Yields None when tracing is off."""
    if _state.tracer is None:
        return _OFF
    parent = propagate.extract(carrier, getter=getter)
    return _Current(
        _state.tracer.start_span(name, parent, kind=SpanKind.SERVER, attributes=attributes)
    )


def finish(span: Span | None, attribute: str, status: int, failed: bool) -> None:
    """Record how a request ended on its span: its status code, and whether it failed."""
    if span is None:
        return
    span.set_attribute(attribute, status)
    if failed:
        span.set_status(StatusCode.ERROR)


class MetadataGetter(Getter[Sequence[tuple[str, str]]]):
    """Reads the trace context from gRPC metadata, (key, value) pairs with lower-case keys."""

    def get(self, carrier: Sequence[tuple[str, str]], key: str) -> list[str] | None:
        return [value for name, value in carrier if name == key] or None

    def keys(self, carrier: Sequence[tuple[str, str]]) -> list[str]:
        return [name for name, _ in carrier]


def rpc_attributes(method: str) -> dict[str, str]:
    """`Service/Method` as span attributes."""
    service, _, name = method.partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class _ClientCall(_Current):
    """A client span, current while the call is made; yields the metadata carrying it."""

    __slots__ = ()

    def __enter__(self) -> tuple[tuple[str, str], ...]:
        super().__enter__()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return tuple(carrier.items())

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            code = grpc.StatusCode.OK
        else:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        finish(self.span, GRPC_STATUS, code.value[0], failed=error is not None)
        super().__exit__(kind, error, traceback)


def grpc_client_call(method: str, target: str) -> AbstractContextManager[tuple | None]:
    """The span of one gRPC call to `target` (`host:port`) of `method` (`Service/Method`); yields
    the metadata that carries its context to the server (None when tracing is off):

        with tracing.grpc_client_call("ExampleService/GetServerResponse", addr) as metadata:
            stub.GetServerResponse(request, metadata=metadata)
    """
    if _state.tracer is None:
        return _OFF
    host, _, port = target.rpartition(":")
    attributes = {**rpc_attributes(method), "server.address": host, "server.port": int(port)}
    return _ClientCall(
        _state.tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
    )
