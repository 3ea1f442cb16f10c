"""Per API call: a request id, the request metrics, and a structured log line (request id,
method, status, latency, caller role) for failed calls, or for all with ACCESS_LOG=all.

Never the token, the `sub`, or any profile field (GDPR). The request id comes from the
`x-request-id` metadata, or is generated, and is returned in the trailing metadata.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

import grpc
import grpc.aio

from profile_service.runtime import logs, metrics
from profile_service.transport import call_notes
from profile_service.transport.unary_interceptor import (
    Behavior,
    UnaryInterceptor,
    run_reporting_status,
)

_LOGGER = logging.getLogger("profile_service.access")
# Also read by tracing.py, from the trailing metadata set here.
REQUEST_ID_KEY = "x-request-id"
_MAX_REQUEST_ID = 128
# Generated ids: a random prefix per process and a counter, 32 hex digits in all. Unique like
# a random id (the prefix tells processes apart), without a system call on every call.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


class AccessLogInterceptor(UnaryInterceptor):
    """Times and counts every API call; logs the failed ones, or all.

    Logging every successful call costs a noticeable share of Get's throughput (JSON formatting,
    the handler's lock and a write per line, all under the GIL; figures in bench/README.md), so
    by default only failed calls are logged; the metrics count every call.
    """

    def __init__(self, log_successful_calls: bool = False) -> None:
        self._log_ok = log_successful_calls

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """Time, log and count each call of `method`."""
        return _observed(method, behavior, self._log_ok)


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's x-request-id if gRPC can send it back (1 to 128 printable ASCII
    characters), else a fresh one: an id that gRPC refuses in the trailers would turn an
    answered call into an error."""
    for key, value in context.invocation_metadata() or ():
        if (
            key == REQUEST_ID_KEY
            and isinstance(value, str)
            and 0 < len(value) <= _MAX_REQUEST_ID
            and value.isascii()
            and value.isprintable()
        ):
            return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _observed(method: str, behavior: Behavior, log_ok: bool) -> Behavior:
    short_name = method.rsplit("/", 1)[-1]

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        request_id = _request_id(context)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        with call_notes.collecting() as notes:

            def log_and_count(code: grpc.StatusCode) -> None:
                _log_and_count(method, short_name, request_id, code, started, notes, log_ok)

            return await run_reporting_status(behavior, request, context, log_and_count)

    return handle


def _log_and_count(
    method: str,
    short_name: str,
    request_id: str,
    code: grpc.StatusCode,
    started: float,
    notes: dict[str, str],
    log_ok: bool,
) -> None:
    seconds = time.perf_counter() - started
    metrics.observe_call(short_name, code.name, seconds)
    failed = code is not grpc.StatusCode.OK
    dropped = logs.FAILED_CALL_LINES.take() if failed else 0
    if (log_ok or failed) and dropped is not None:
        if dropped:
            notes["dropped_before"] = str(dropped)
        _LOGGER.info(
            "call",
            extra={
                "request_id": request_id,
                "method": method,
                "code": code.name,
                "latency_ms": round(seconds * 1000, 3),
                **notes,
            },
        )
