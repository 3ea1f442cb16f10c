"""Calls whose request has not fully arrived are bounded in number and in time.

gRPC holds a call's request bytes until the whole message is in, with no limit of its own: a
client with no token could open thousands of streams, announce 88 KiB bodies, send all but the
last byte and keep answering pings, and each would pin its bytes for the connection's whole
life (issue "Transport hardening", item 2). So every call reads its request here, where it is
counted: at most MAX_UNFINISHED calls wait for their request at once (a new one evicts the
oldest waiter), and none waits longer than UNFINISHED_SECONDS. A real client sends its request
with its headers, so it is never the oldest waiter for long; an evicted or late call ends
RESOURCE_EXHAUSTED, and its bytes are freed with it. Memory held by unfinished requests is then
at most MAX_UNFINISHED times the largest request (docs/operations.md, "Transport limits").

Every handler on the port (the API's, health's, reflection's) is registered through
`Bounded(server)`, which hands gRPC a request-streaming handler in place of each unary-request
one, so that the read happens in our code rather than inside grpc.aio, where nothing can bound
it. At registration, not as a grpc.aio server interceptor: that would cost every call three
coroutines more to find the same handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias

import grpc
import grpc.aio

from profile_service import errors
from profile_service.errors import Reason, ResourceExhausted
from profile_service.runtime import metrics

# Calls waiting for (the rest of) their request message, in the whole process. With requests of
# at most validation.MAX_REQUEST_BYTES, this bounds what they can hold.
MAX_UNFINISHED = 500
# How long a call may take to deliver one request message after its headers (or after its
# previous message, for a stream).
UNFINISHED_SECONDS = 10.0
REASON = Reason.REQUEST_NOT_RECEIVED
# How often late calls are looked for: a call is dropped between UNFINISHED_SECONDS and this
# much later.
SWEEP_SECONDS = 0.5

# The stubs type handlers as the sync server's; under grpc.aio they are coroutines.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class _Waiter:
    """One call waiting for a message, since `since` (the loop's clock)."""

    __slots__ = ("context", "since")

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], since: float) -> None:
        self.context = context
        self.since = since


class UnfinishedRequests:
    """Bounds the calls waiting for their request: at most `limit` at once, `seconds` each."""

    def __init__(self, limit: int = MAX_UNFINISHED, seconds: float = UNFINISHED_SECONDS) -> None:
        self._limit = limit
        self._seconds = seconds
        # Insertion order is arrival order: the first key is the oldest waiter.
        self._waiting: dict[_Waiter, None] = {}
        self._wrapped: dict[Handler, Handler] = {}
        self._aborting: set[asyncio.Task[None]] = set()  # kept referenced until done
        self._sweeper: asyncio.Task[None] | None = None

    def wrap(self, handler: Handler) -> Handler:
        """`handler`, reading its request through this bound (the same wrapper each time)."""
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler)
        return wrapped

    async def receive(self, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """The next request message (grpc.aio.EOF at the end of a stream), or the call ends
        RESOURCE_EXHAUSTED if it is evicted or takes too long."""
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        waiter = _Waiter(context, loop.time())
        self._waiting[waiter] = None
        if len(self._waiting) > self._limit:
            self._drop(next(iter(self._waiting)), "evicted")
        try:
            # A dropped call is aborted from outside (_drop): gRPC then ends this read, and
            # read() raises the abort, which gRPC takes as the call's end. The read itself is
            # never cancelled: gRPC would still write the message into buffers it was given.
            return await context.read()
        finally:
            self._waiting.pop(waiter, None)

    async def close(self) -> None:
        """Stop looking for late calls (the server is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        """Drop the calls waiting longer than allowed, every SWEEP_SECONDS: one task for all,
        rather than a timer per call. The oldest waiters come first in the dict."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            too_old = loop.time() - self._seconds
            while self._waiting:
                oldest = next(iter(self._waiting))
                if oldest.since > too_old:
                    break
                self._drop(oldest, "late")

    def _drop(self, waiter: _Waiter, why: str) -> None:
        """End `waiter`'s call RESOURCE_EXHAUSTED: `why` is "late" or "evicted"."""
        if self._waiting.pop(waiter, 0) is None:  # still waiting: it was in the dict
            metrics.UNFINISHED_DROPPED.labels(why).inc()
            message = (
                f"the request did not arrive within {self._seconds:g} s"
                if why == "late"
                else "too many calls are waiting for their request; this one waited longest"
            )
            task = asyncio.get_running_loop().create_task(_abort(waiter.context, message))
            self._aborting.add(task)
            task.add_done_callback(self._aborting.discard)

    def _wrap(self, handler: Handler) -> Handler:
        receive = self.receive
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }

        async def messages(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            while (message := await receive(context)) is not grpc.aio.EOF:
                yield message

        if handler.unary_unary is not None:
            unary_unary: Any = handler.unary_unary

            async def unary_in_unary_out(_: object, context: Any) -> Any:
                return await unary_unary(await receive(context), context)

            return grpc.stream_unary_rpc_method_handler(unary_in_unary_out, **options)
        if handler.unary_stream is not None:
            unary_stream: Any = handler.unary_stream

            async def unary_in_stream_out(_: object, context: Any) -> AsyncIterator[Any]:
                async for response in _responses(unary_stream(await receive(context), context)):
                    yield response

            return grpc.stream_stream_rpc_method_handler(unary_in_stream_out, **options)
        if handler.stream_unary is not None:
            stream_unary: Any = handler.stream_unary

            async def stream_in_unary_out(_: object, context: Any) -> Any:
                return await stream_unary(messages(context), context)

            return grpc.stream_unary_rpc_method_handler(stream_in_unary_out, **options)
        stream_stream: Any = handler.stream_stream

        async def stream_in_stream_out(_: object, context: Any) -> AsyncIterator[Any]:
            async for response in _responses(stream_stream(messages(context), context)):
                yield response

        return grpc.stream_stream_rpc_method_handler(stream_in_stream_out, **options)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], message: str) -> None:
    with contextlib.suppress(Exception):  # abort raises once the status is sent
        await errors.abort(context, ResourceExhausted(message, REASON))


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's responses, whether it yields them or writes them itself."""
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    else:
        await result


class _BoundGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, bound: UnfinishedRequests) -> None:
        self._inner = inner
        self._bound = bound

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        return None if handler is None else self._bound.wrap(handler)


class Bounded:
    """`server` as the generated `add_…_to_server` functions (and unary_interceptor.register)
    see it: each handler they register reads its request through `bound`."""

    def __init__(self, server: grpc.aio.Server, bound: UnfinishedRequests) -> None:
        self._server = server
        self._bound = bound

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """As grpc.aio.Server's, each handler bounded."""
        self._server.add_generic_rpc_handlers(
            tuple(_BoundGeneric(handler, self._bound) for handler in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        """As grpc.aio.Server's, each handler bounded."""
        self._server.add_registered_method_handlers(
            service, {method: self._bound.wrap(h) for method, h in handlers.items()}
        )
