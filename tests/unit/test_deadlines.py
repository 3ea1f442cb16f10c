"""How a call's time is shared out (deadlines.py): scaled, never a fixed margin."""

import time

import pytest

from profile_service.domain import deadlines


def _offsets(
    remaining: float | None, max_seconds: float
) -> tuple[deadlines.Budget, float, float, float]:
    """A budget, its give_up and commit_by as offsets from just before it was made, and how
    long making it took (a loaded machine may take a millisecond)."""
    before_mono, before_wall = time.monotonic(), time.time()
    budget = deadlines.budget(remaining, max_seconds)
    took = time.monotonic() - before_mono
    return budget, budget.give_up - before_mono, budget.commit_by - before_wall, took


def test_a_20_ms_deadline_leaves_the_database_most_of_it() -> None:
    budget, give_up, commit_by, took = _offsets(0.020, 5)
    # A tenth is kept back for the answer: 18 ms for the database, not 20 - 50 < 0.
    assert 0.018 - 1e-6 <= give_up <= 0.018 + took + 1e-3
    # The commit must happen a tenth of that earlier still.
    assert 0.0162 - 1e-6 <= commit_by <= 0.0162 + took + 1e-3
    assert budget.timeout_ms >= 1


@pytest.mark.parametrize("remaining", [0.01, 0.1, 0.4, 2.0, 30.0])
def test_the_kept_back_time_scales_with_the_deadline_up_to_a_cap(remaining: float) -> None:
    _, give_up, _, took = _offsets(remaining, 60)
    expected = min(remaining * deadlines.RESERVE_FRACTION, deadlines.RESERVE_MAX)
    assert remaining - expected - 1e-6 <= give_up <= remaining - expected + took + 1e-3


def test_the_database_commits_before_the_service_stops_waiting() -> None:
    for remaining in (None, 0.003, 0.05, 1.0, 100.0):
        budget, give_up, commit_by, _ = _offsets(remaining, 5)
        assert commit_by < give_up
        # and statement_timeout makes it give up on its own no later than that
        assert budget.timeout_ms / 1000 <= give_up + 0.001


def test_no_deadline_gets_the_configured_maximum() -> None:
    budget, give_up, _, took = _offsets(None, 5)
    assert 5 - 1e-6 <= give_up <= 5 + took + 1e-3
    assert budget.timeout_ms == 5000


@pytest.mark.parametrize("remaining", [-1.0, 0.0, 0.0004])
def test_a_call_without_usable_time_is_out_of_time(remaining: float) -> None:
    with pytest.raises(deadlines.OutOfTime):
        deadlines.budget(remaining, max_seconds=5)
