"""What the service makes of the database's answers and silences (liveness.py), on a clock the
test moves by hand."""

import pytest

from profile_service.storage import liveness
from profile_service.storage.liveness import SHORT_WINDOW_FACTOR, DatabaseLiveness


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(liveness.time, "monotonic", fake)
    return fake


def test_a_request_unanswered_past_the_limit_with_nothing_heard_makes_it_silent(
    clock: _Clock,
) -> None:
    live = DatabaseLiveness(silent_after=1.0)
    live.sent()
    clock.now += 0.9
    assert not live.silent
    clock.now += 0.2
    assert live.silent
    # It stays silent once the request is given up: only an answer ends it.
    live.unanswered(0)
    clock.now += 5
    assert live.silent
    live.answered(live.sent())
    assert not live.silent


def test_other_answers_keep_a_database_with_lock_waiters_alive(clock: _Clock) -> None:
    live = DatabaseLiveness(silent_after=1.0)
    live.sent()  # waits on a row lock for ten seconds
    for _ in range(40):
        clock.now += 0.25
        live.answered(live.sent())  # the probe, or another user's call
        assert not live.silent


def test_an_idle_database_is_not_silent_and_a_new_request_gets_the_whole_limit(
    clock: _Clock,
) -> None:
    live = DatabaseLiveness(silent_after=1.0)
    clock.now += 60  # nothing asked, nothing heard
    assert not live.silent
    live.sent()
    clock.now += 0.5
    assert not live.silent  # heard nothing for a minute, but waited only half a second
    clock.now += 0.6
    assert live.silent


def test_a_window_is_too_short_below_a_few_median_round_trips(clock: _Clock) -> None:
    live = DatabaseLiveness(silent_after=1.0)
    for seconds in (0.001, 0.002, 0.0015, 0.001, 0.002, 0.0015, 0.001):
        ticket = live.sent()
        clock.now += seconds
        live.answered(ticket)
    # Too few yet (a new connection's first calls are slow): no verdict against the caller.
    assert not live.too_short(0.0001)
    ticket = live.sent()
    clock.now += 2.0  # one lock wait does not move the median
    live.answered(ticket)
    median = 0.0015
    assert live.too_short(SHORT_WINDOW_FACTOR * median * 0.99)
    assert not live.too_short(SHORT_WINDOW_FACTOR * median * 1.01)
