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


# A JWT (three base64url parts, the first two JSON objects: "eyJ"), or a bearer credential,
# in text. gRPC quotes metadata values as bytes literals instead (below), whatever their bytes.
_TOKEN = re.compile(r"Bearer\s+\S+|eyJ[\w-]*\.eyJ[\w-]*\.[\w-]*", re.IGNORECASE)
# A Python bytes literal, as gRPC's "Invalid encoding on b'…'" quotes a metadata value it cannot
# decode (an authorization value with one bad byte anywhere in it included).
_BYTES_LITERAL = re.compile(r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"')


def redact(text: str) -> str:
    """`text` with every bytes literal and anything token-shaped replaced by [redacted]."""
    return _TOKEN.sub("[redacted]", _BYTES_LITERAL.sub("b'[redacted]'", text))


class _GrpcLines(logging.Filter):
    """gRPC's own log lines: redacted like ours, and through the same budget as the lines about
    failed calls. A header value that is not UTF-8 makes gRPC log an ERROR with a traceback
    each time the call's metadata is read; a client sending such calls on purpose could
    otherwise fill the logs (issue "Transport hardening", item 3)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            dropped = FAILED_CALL_LINES.take()
            if dropped is None:
                return False
            if dropped:
                record.dropped_before = dropped
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and isinstance(record.exc_info[1], UnicodeDecodeError):
            # The traceback says no more than the message; one line per failure is enough.
            record.exc_info = record.exc_text = None
        return True


def redact_grpc_logs() -> None:
    """Route gRPC's own log lines through redaction and the failed-call budget (idempotent).

    Called once gRPC is imported: every logger of the grpc package gets the filter (a filter
    on the parent "grpc" logger would not see its children's records)."""
    names = [n for n in logging.Logger.manager.loggerDict if n == "grpc" or n.startswith("grpc.")]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _GrpcLines) for f in logger.filters):
            logger.addFilter(_GrpcLines())


class LineBudget:
    """At most `burst` lines at once, refilled at `per_second`: a client that fails calls on
    purpose cannot flood the logs. The next line let through says how many were dropped."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._dropped = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """None if this line must be dropped; else how many were dropped before it."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens < 1:
                self._dropped += 1
                return None
            self._tokens -= 1
            dropped, self._dropped = self._dropped, 0
            return dropped


# Lines about failed calls (the access log's, unexpected errors'), shared by both.
FAILED_CALL_LINES = LineBudget(per_second=50, burst=100)
