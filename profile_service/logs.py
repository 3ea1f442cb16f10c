"""Structured JSON logging for the server process."""

import logging
import re
import sys

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
