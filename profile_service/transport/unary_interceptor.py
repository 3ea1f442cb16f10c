"""Interceptors for unary handlers, applied once when the service is registered.

They are not passed to `grpc.aio.server(interceptors=...)`: those run for every call, health
and reflection included, and cost a coroutine more per call. Wrapping each method's handler at
registration gives the same call path (outermost interceptor first, then the handler), only
for the API's methods, with grpc's registered-method fast path.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc
import grpc.aio
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Deserializers = Callable[[type[Any]], Callable[[bytes], Any]]


class Registry(Protocol):
    """Where handlers are registered: a grpc.aio.Server, or unfinished.Bounded around one."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None: ...

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, "grpc.RpcMethodHandler[Any, Any]"]
    ) -> None: ...


class UnaryInterceptor:
    """Wraps an async unary-unary handler."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """The handler to run instead of `behavior` for `method` ("/package.Service/Method")."""
        raise NotImplementedError


async def run_reporting_status(
    behavior: Behavior,
    request: Any,
    context: grpc.aio.ServicerContext[Any, Any],
    report: Callable[[grpc.StatusCode], None],
) -> Any:
    """Run `behavior`, then `report` the status the call ends with, whether it returned or
    raised: OK, the code it set, CANCELLED if the caller went away, else UNKNOWN."""
    code = grpc.StatusCode.UNKNOWN
    try:
        response = await behavior(request, context)
        code = context.code() or grpc.StatusCode.OK
        return response
    except asyncio.CancelledError:
        # The caller cancelled, or its deadline passed: gRPC cancels the handler.
        code = grpc.StatusCode.CANCELLED
        raise
    except BaseException:
        code = context.code() or grpc.StatusCode.UNKNOWN
        raise
    finally:
        report(code)


def register(
    server: Registry,
    servicer: object,
    service: ServiceDescriptor,
    interceptors: Sequence[UnaryInterceptor],
    deserializer: Deserializers,
) -> None:
    """Serve `service`'s unary methods from `servicer` on `server`, each wrapped by the
    interceptors (interceptors[0] runs outermost), reading requests with
    `deserializer(request class)`.

    Instead of the generated add_…_to_server, whose deserializers raise on a malformed body
    before any interceptor runs.
    """
    handlers = {}
    for method in service.methods:
        behavior: Behavior = getattr(servicer, method.name)
        for interceptor in reversed(interceptors):
            behavior = interceptor.wrap(f"/{service.full_name}/{method.name}", behavior)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=deserializer(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(
                method.output_type
            ).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
