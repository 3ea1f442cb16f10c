"""Once the server starts draining, new API calls are refused with UNAVAILABLE, and none is
left for gRPC to cancel.

A call refused that way has done nothing, and UNAVAILABLE tells the client to retry, which a
load balancer sends to another pod. gRPC's own answer to a call that arrives while the server
shuts down is CANCELLED, which clients do not retry: gRPC core cancels every call it accepted
but had not handed to a handler yet when the stop begins (grpc/grpc#41785). With clients
calling back to back, several such calls are always waiting for grpc.aio, which takes them
one at a time.

So the stop goes in three steps (server.py): `close()`, then, after SETTLE_SECONDS, gRPC's
own stop, then `release()`. Between close and release, a new call is held, not answered:
grpc.aio takes each call that arrives, and clients, waiting for an answer, send no more. When
gRPC's stop begins (and tells every connection to go away), nothing is left waiting to be
cancelled; the held calls are then answered UNAVAILABLE, and their retries go elsewhere.
"""

import asyncio
from typing import Any

import grpc.aio

from profile_service import errors
from profile_service.errors import Reason, Unavailable
from profile_service.transport.unary_interceptor import Behavior, UnaryInterceptor

# Long enough for every call already on its way, or waiting inside gRPC, to reach a handler
# and be held (one network round trip, a few loop iterations); short next to any deadline.
SETTLE_SECONDS = 0.1
# A held call waits at most this share of its time left: it must get its UNAVAILABLE (which
# clients retry) well before its deadline, and never DEADLINE_EXCEEDED.
HOLD_SHARE = 0.5
# And at most this long, should the stop never come to release it.
HOLD_MAX_SECONDS = 5.0


class Admission(UnaryInterceptor):
    """Admits calls until `close()`; holds new ones until `release()`, then refuses them with
    UNAVAILABLE."""

    def __init__(self) -> None:
        self._open = True
        self._released = asyncio.Event()

    def close(self) -> None:
        """Admit no new call from now on: hold each until `release()`."""
        self._open = False

    def release(self) -> None:
        """Refuse the held calls, and every later one, at once."""
        self._open = False
        self._released.set()

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """`behavior`, while the server admits calls."""

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not self._open:
                await self._hold(context)
                await errors.abort(
                    context, Unavailable("the server is shutting down", Reason.SHUTTING_DOWN)
                )
            return await behavior(request, context)

        return handle

    async def _hold(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._released.is_set():
            return
        remaining = context.time_remaining()
        wait = (
            HOLD_MAX_SECONDS if remaining is None else min(HOLD_MAX_SECONDS, remaining * HOLD_SHARE)
        )
        try:
            async with asyncio.timeout(wait):
                await self._released.wait()
        except TimeoutError:
            pass
