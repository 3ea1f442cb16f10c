"""How a call's time is shared out (deadlines.py): scaled, never a fixed margin."""

import time

import pytest

from profile_service import deadlines


def test_a_20_ms_deadline_leaves_the_database_most_of_it() -> None:
    before = time.monotonic()
    budget = deadlines.budget(0.020, max_seconds=5)
    # A tenth is kept back for the answer: 18 ms for the database, not 20 - 50 < 0.
    assert budget.give_up - before == pytest.approx(0.018, abs=0.001)
    # The commit must happen a tenth of that earlier still.
    assert budget.seconds_to_commit() == pytest.approx(0.0162, abs=0.001)
    assert budget.timeout_ms >= 1


@pytest.mark.parametrize("remaining", [0.01, 0.1, 0.4, 2.0, 30.0])
def test_the_kept_back_time_scales_with_the_deadline_up_to_a_cap(remaining: float) -> None:
    kept_back = remaining - deadlines.budget(remaining, max_seconds=60).seconds_left()
    expected = min(remaining * deadlines.RESERVE_FRACTION, deadlines.RESERVE_MAX)
    assert kept_back == pytest.approx(expected, abs=0.001)


def test_the_database_commits_before_the_service_stops_waiting() -> None:
    for remaining in (None, 0.003, 0.05, 1.0, 100.0):
        budget = deadlines.budget(remaining, max_seconds=5)
        assert budget.seconds_to_commit() < budget.seconds_left()
        # and statement_timeout makes it give up on its own no later than that
        assert budget.timeout_ms / 1000 <= budget.seconds_left() + 0.001


def test_no_deadline_gets_the_configured_maximum() -> None:
    budget = deadlines.budget(None, max_seconds=5)
    assert budget.seconds_left() == pytest.approx(5, abs=0.01)
    assert budget.timeout_ms == 5000


@pytest.mark.parametrize("remaining", [-1.0, 0.0, 0.0004])
def test_a_call_without_usable_time_is_out_of_time(remaining: float) -> None:
    with pytest.raises(deadlines.OutOfTime):
        deadlines.budget(remaining, max_seconds=5)
