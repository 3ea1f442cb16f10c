"""Fields that parts of the request path add to the current call's log line (the caller's
role, a database error's SQLSTATE), apart from the access log that writes the line: auth and
the servicer note, access_log.py collects."""

import contextvars
from types import TracebackType

_NOTES: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("call_notes")


def note(key: str, value: str) -> None:
    """Add a field to the current call's log line (nothing outside a call)."""
    notes = _NOTES.get(None)
    if notes is not None:
        notes[key] = value


class collecting:  # used as a function: `with collecting() as notes`
    """The notes made while the block runs (one call's handling).

    A class rather than @contextmanager: this runs on every call, and a generator-based
    context manager costs several times more."""

    __slots__ = ("_notes", "_token")

    def __enter__(self) -> dict[str, str]:
        self._notes: dict[str, str] = {}
        self._token = _NOTES.set(self._notes)
        return self._notes

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _NOTES.reset(self._token)
