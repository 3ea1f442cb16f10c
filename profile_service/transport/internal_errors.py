"""The last line of defence: an exception no handler turned into a status becomes INTERNAL.

Left to itself, grpc answers such a call UNKNOWN with "Exception calling application: <the
exception's text>", and logs its traceback: text that can carry SQL, key material or profile
data. Here only the exception's class name is logged, and the caller learns nothing more than
"internal error". Calls the handlers aborted on purpose pass through untouched.
"""

import logging
from typing import Any

import grpc.aio

from profile_service import errors
from profile_service.errors import Internal, Reason
from profile_service.runtime import logs
from profile_service.transport.unary_interceptor import Behavior, UnaryInterceptor

_LOGGER = logging.getLogger(__name__)


class InternalErrorInterceptor(UnaryInterceptor):
    """Turns an unexpected exception into INTERNAL, logging only its class name."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """`behavior`, with unexpected exceptions answered INTERNAL."""

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except Exception as exc:
                # context.abort() raises too, after setting the status: that one is deliberate.
                if context.code() is not None:
                    raise
                if logs.FAILED_CALL_LINES.take() is not None:
                    _LOGGER.error("unexpected %s in %s", type(exc).__name__, method)
                await errors.abort(context, Internal("internal error", Reason.INTERNAL))

        return handle
