"""A request that does not decode is the client's fault: INVALID_ARGUMENT, one WARNING line.

grpcio decodes each request before any servicer code runs, and when that fails it answers
INTERNAL "Exception deserializing request!" and logs the traceback at ERROR, so any client could
fill the logs. This interceptor gives the servicers' handlers (ours, health, reflection) the raw
bytes and decodes them itself.
"""

import logging
from collections.abc import Callable

import grpc

from service_common.grpc_interceptor import WrapsEachMethodOnce

log = logging.getLogger(__name__)


def _decoder(deserializer: Callable, method: str) -> Callable:
    message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    expected = message.full_name if message else "request message"

    def decode(raw: bytes, context: grpc.ServicerContext):
        try:
            return deserializer(raw)
        except Exception as err:  # whatever the decoder raises, the input is at fault
            log.warning(
                "malformed request", extra={"method": method, "error": f"{type(err).__name__}"}
            )
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid {expected} ({len(raw)} bytes could not be decoded)",
            )

    return decode


def _decoding(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler, fed raw bytes that it decodes itself."""
    decode = _decoder(handler.request_deserializer, method)
    serializer = handler.response_serializer
    if handler.unary_unary:
        behavior = handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(
            lambda raw, context: behavior(decode(raw, context), context),
            response_serializer=serializer,
        )
    if handler.unary_stream:
        behavior = handler.unary_stream
        return grpc.unary_stream_rpc_method_handler(
            lambda raw, context: behavior(decode(raw, context), context),
            response_serializer=serializer,
        )
    if handler.stream_unary:
        behavior = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(
            lambda raws, context: behavior((decode(r, context) for r in raws), context),
            response_serializer=serializer,
        )
    behavior = handler.stream_stream
    return grpc.stream_stream_rpc_method_handler(
        lambda raws, context: behavior((decode(r, context) for r in raws), context),
        response_serializer=serializer,
    )


class DecodeRequests(WrapsEachMethodOnce):
    """Decodes every request of a method with a deserializer; one without is left as it is."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        return None if handler.request_deserializer is None else _decoding(handler, method)
