"""A request body that is not a valid protobuf message is INVALID_ARGUMENT, like any bad input.

gRPC's own answer is UNKNOWN or INTERNAL ("Exception deserializing request!") with a traceback
logged per call, before any interceptor sees it: a client could fill the logs, and the call
would be missing from the metrics and the access log. Here the request deserializer returns a
marker instead of raising, and the RejectMalformed interceptor answers it.
"""

from collections.abc import Callable
from typing import Any

import grpc.aio
from google.protobuf.message import DecodeError, Message

from profile_service import errors
from profile_service.errors import InvalidArgument, Reason
from profile_service.transport.unary_interceptor import Behavior, UnaryInterceptor


class Malformed:
    """Stands for a request body that did not parse as `type_name`."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def parse_or_mark(message_class: type[Message]) -> Callable[[bytes], Any]:
    """A request deserializer for `message_class` that returns Malformed instead of raising."""
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            return Malformed(type_name)

    return parse


class RejectMalformed(UnaryInterceptor):
    """Answers a Malformed request INVALID_ARGUMENT before anything else reads it."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """`behavior`, for requests that parsed."""

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Malformed):
                message = f"the request body is not a valid {request.type_name} message"
                await errors.abort(
                    context, InvalidArgument([], message=message, reason=Reason.MALFORMED_REQUEST)
                )
            return await behavior(request, context)

        return handle
