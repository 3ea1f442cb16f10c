"""Interceptors for unary handlers, applied once when the service is registered.

They are not passed to `grpc.server(interceptors=...)`: grpc's sync server runs those on its
single polling thread for every call, before a worker takes it, which cost about 8 % of Get's
throughput in the bench; and anything per call (token checks, timing, contextvars) has to
happen in the handler's own thread anyway. Wrapping each method's handler at registration
gives the same call path (outermost interceptor first, then the handler) with grpc's
registered-method fast path.
"""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor

Behavior = Callable[[Any, grpc.ServicerContext], Any]
S = TypeVar("S")


class UnaryInterceptor:
    """Wraps a unary-unary handler."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """The handler to run instead of `behavior` for `method` ("/package.Service/Method")."""
        raise NotImplementedError


def intercepted(
    servicer: S, service: ServiceDescriptor, interceptors: Sequence[UnaryInterceptor]
) -> S:
    """`servicer` with each of `service`'s methods wrapped; interceptors[0] runs outermost."""
    for method in service.methods:
        behavior: Behavior = getattr(servicer, method.name)
        for interceptor in reversed(interceptors):
            behavior = interceptor.wrap(f"/{service.full_name}/{method.name}", behavior)
        setattr(servicer, method.name, behavior)
    return servicer
