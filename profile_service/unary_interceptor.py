"""Interceptors for unary handlers, applied once when the service is registered.

They are not passed to `grpc.aio.server(interceptors=...)`: those run for every call, health
and reflection included, and cost a coroutine more per call. Wrapping each method's handler at
registration gives the same call path (outermost interceptor first, then the handler), only
for the API's methods, with grpc's registered-method fast path.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
S = TypeVar("S")


class UnaryInterceptor:
    """Wraps an async unary-unary handler."""

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
