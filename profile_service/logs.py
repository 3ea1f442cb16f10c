"""Structured JSON logging for the server process."""

import logging
import re
import sys
import threading
import time

from pythonjsonlogger.json import JsonFormatter


def configure(level: str = "INFO") -> None:
    """Send JSON lines to stderr: time, level, logger, message and any `extra` fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# gRPC's own loggers that may quote a request's metadata. cygrpc logs a value it cannot decode
# verbatim ("Invalid encoding on b'Bearer eyJ…'"), a usable token included.
_GRPC_LOGGERS = ("grpc._cython.cygrpc", "grpc._common", "grpc._server", "grpc.aio._server")
# A JWT (three base64url parts, the first two JSON objects: "eyJ"), with its scheme if any.
_TOKEN = re.compile(r"(?:Bearer\s+)?eyJ[\w-]*\.eyJ[\w-]*\.[\w-]*")


class _RedactTokens(logging.Filter):
    """Replaces anything token-shaped in a record's message with [redacted]."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN.sub("[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_grpc_logs() -> None:
    """Keep tokens out of what gRPC itself logs (idempotent)."""
    for name in _GRPC_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())


class LineBudget:
    """At most `burst` lines at once, refilled at `per_second`: a client that fails calls on
    purpose cannot flood the logs. The next line let through says how many were dropped."""

    def __init__(self, per_second: float, burst: int) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._dropped = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """None if this line must be dropped; else how many were dropped before it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                self._dropped += 1
                return None
            self._tokens -= 1
            dropped, self._dropped = self._dropped, 0
            return dropped


# Lines about failed calls (the access log's, unexpected errors'), shared by both.
FAILED_CALL_LINES = LineBudget(per_second=50, burst=100)
