"""A base for server interceptors that wrap unary handlers, once per method.

grpc's sync server calls interceptors on its polling thread, before a worker thread takes the
call; anything per call (token checks, timing, contextvars) must therefore happen inside the
handler. This base builds the wrapped handler the first time a method is seen and reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]


class UnaryInterceptor(grpc.ServerInterceptor):
    """Wraps the unary-unary handlers of the methods `applies_to` accepts with `wrap`."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def applies_to(self, method: str) -> bool:
        """Whether calls of `method` (e.g. "/profile.v1.ProfileService/Get") are wrapped."""
        raise NotImplementedError

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """The handler to run instead of `behavior` for `method`."""
        raise NotImplementedError

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The wrapped handler for applicable unary methods; the original otherwise."""
        method: str = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not self.applies_to(method):
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self.wrap(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
        return wrapped
