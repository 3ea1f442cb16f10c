"""Fields that parts of the request path add to the current call's log line (the caller's
role, a database error's SQLSTATE), apart from the access log that writes the line: auth and
the servicer note, access_log.py collects."""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_NOTES: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("call_notes")


def note(key: str, value: str) -> None:
    """Add a field to the current call's log line (nothing outside a call)."""
    notes = _NOTES.get(None)
    if notes is not None:
        notes[key] = value


@contextmanager
def collecting() -> Iterator[dict[str, str]]:
    """The notes made while the block runs (one call's handling)."""
    notes: dict[str, str] = {}
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)
