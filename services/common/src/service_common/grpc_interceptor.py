"""The shape both of the gRPC server's interceptors share (grpc_telemetry, grpc_decoding)."""

import grpc


class WrapsEachMethodOnce(grpc.ServerInterceptor):
    """Wraps each method's handler once (cached by method name), so a call pays a dict lookup."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler | None:
        """The method's handler wrapped, or None to leave it as it is."""
        raise NotImplementedError

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self.wrap(handler, method)
            if wrapped is None:
                return handler
            wrapped = self._handlers.setdefault(method, wrapped)
        return wrapped
