"""The statement timeout ladder: never past the caller's deadline, few distinct settings."""

import pytest

from profile_service.domain.deadlines import statement_timeout_ms


@pytest.mark.parametrize(
    ("seconds_left", "expected_ms"),
    [
        (None, 5000),  # no deadline: the configured maximum
        (10.0, 5000),
        (5.0, 5000),
        (4.99, 2500),
        (0.95, 625),
        (0.6, 312),
        (0.0005, 1),
    ],
)
def test_timeout_is_the_largest_rung_that_fits(
    seconds_left: float | None, expected_ms: int
) -> None:
    assert statement_timeout_ms(seconds_left, 5.0) == expected_ms


def test_similar_deadlines_share_one_setting() -> None:
    rungs = {statement_timeout_ms(0.9 + i / 1000, 5.0) for i in range(90)}
    assert rungs == {625}


def test_the_timeout_never_exceeds_the_time_left() -> None:
    for millis in range(1, 6000, 7):
        assert statement_timeout_ms(millis / 1000, 5.0) <= max(1, millis)
