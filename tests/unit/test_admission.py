"""The drain's refusals (admission.py): held until the stop begins, never past a share of the
call's own time; the SIGTERM test under load is tests/e2e/test_drain.py."""

import asyncio
from typing import Any

import grpc
import pytest

from profile_service.transport.admission import HOLD_SHARE, Admission


class _Aborted(Exception):
    pass


class _Context:
    """What Admission and errors.abort use of grpc.aio's servicer context."""

    def __init__(self, time_remaining: float | None) -> None:
        self._time_remaining = time_remaining
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def time_remaining(self) -> float | None:
        return self._time_remaining

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort_with_status(self, status: Any) -> None:
        self.code, self.details = status.code, status.details
        raise _Aborted()


async def _served(request: Any, context: Any) -> str:
    return "served"


def _call(admission: Admission, context: _Context) -> "asyncio.Task[Any]":
    return asyncio.ensure_future(admission.wrap("/m", _served)(None, context))


def test_open_admits_closed_holds_until_released_then_refuses() -> None:
    async def scenario() -> None:
        admission = Admission()
        assert await admission.wrap("/m", _served)(None, _Context(5.0)) == "served"
        admission.close()
        context = _Context(5.0)
        held = _call(admission, context)
        for _ in range(10):  # loop iterations, not time: nothing but a release ends the hold
            await asyncio.sleep(0)
        assert not held.done()  # held, not answered: the client sends nothing more meanwhile
        admission.release()
        with pytest.raises(_Aborted):
            await held
        assert (context.code, context.details) == (
            grpc.StatusCode.UNAVAILABLE,
            "the server is shutting down",
        )
        late = _Context(5.0)  # after the release: refused at once
        with pytest.raises(_Aborted):
            await asyncio.wait_for(_call(admission, late), 0.01)
        assert late.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(scenario())


def test_a_held_call_is_refused_within_a_share_of_its_own_time() -> None:
    async def scenario() -> float:
        admission = Admission()
        admission.close()  # and never released
        context = _Context(0.02)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(_Aborted):
            await _call(admission, context)
        assert context.code == grpc.StatusCode.UNAVAILABLE  # never DEADLINE_EXCEEDED
        return loop.time() - started

    waited = asyncio.run(scenario())
    assert HOLD_SHARE * 0.02 * 0.9 <= waited < 0.02
