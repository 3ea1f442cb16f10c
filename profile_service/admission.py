"""Once the server starts draining, new API calls are refused with UNAVAILABLE.

A call refused that way has done nothing, and UNAVAILABLE tells the client to retry, which a
load balancer sends to another pod; gRPC's own answer to a call that arrives while the server
shuts down is CANCELLED, which clients do not retry.
"""

from typing import Any

import grpc.aio

from profile_service import errors
from profile_service.errors import Unavailable
from profile_service.unary_interceptor import Behavior, UnaryInterceptor


class Admission(UnaryInterceptor):
    """Admits calls until `close()`; refuses them with UNAVAILABLE afterwards."""

    def __init__(self) -> None:
        self._open = True

    def close(self) -> None:
        """Refuse every call from now on."""
        self._open = False

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """`behavior`, while the server admits calls."""

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not self._open:
                await errors.abort(
                    context, Unavailable("the server is shutting down", "SHUTTING_DOWN")
                )
            return await behavior(request, context)

        return handle
