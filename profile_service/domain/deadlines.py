"""How a call's time is shared out between the database and the answer.

One place decides, for every call that reaches the database:

- `give_up` (monotonic): when the service stops waiting for the database and answers
  UNAVAILABLE. Before the caller's deadline by a reserve that scales with the time left (a
  tenth of it, at most RESERVE_MAX), so that the answer still reaches the caller in time and a
  20 ms deadline leaves the database 18 ms.
- `commit_by` (wall clock, seconds since the epoch): the last moment the database may commit
  the call's write. The database checks it itself at commit (migration 0005), so a statement
  that reaches a frozen or partitioned database late can never commit after the service gave
  up. It lies before `give_up` by a margin (a tenth of the window, at most COMMIT_MARGIN_MAX)
  that covers the commit and its answer's journey; clocks of the service and the database
  must agree to within that margin (NTP does much better).

A call with no time left for the database is out of time: DEADLINE_EXCEEDED, not UNAVAILABLE,
since retrying with the same deadline cannot help; so is one whose deadline gave the database
too little time for its recent round trips (liveness.py). Calls without a deadline get the
configured DB_TIMEOUT_SECONDS.
"""

import time
from dataclasses import dataclass

from profile_service.errors import OutOfTime, Reason

RESERVE_FRACTION = 0.1
RESERVE_MAX = 0.05
COMMIT_MARGIN_FRACTION = 0.1
COMMIT_MARGIN_MAX = 0.05
# Below this there is no point in asking: one round trip on loopback takes longer.
MIN_WINDOW = 0.0005


@dataclass(frozen=True, slots=True)
class Budget:
    """When to stop waiting for the database, when it must have committed by, and the
    statement_timeout that makes it give up on its own before then."""

    give_up: float
    commit_by: float
    timeout_ms: int
    # The seconds the database was given, and whether the caller's deadline set them (rather
    # than DB_TIMEOUT_SECONDS): only then can running out of them be the caller's choice.
    window: float = 0.0
    by_caller: bool = False

    def seconds_left(self) -> float:
        """Seconds until `give_up` (negative once past)."""
        return self.give_up - time.monotonic()

    def seconds_to_commit(self) -> float:
        """Seconds the database has left before `commit_by`."""
        return self.commit_by - time.time()


def budget(time_remaining: float | None, max_seconds: float) -> Budget:
    """The budget of a call with `time_remaining` seconds (None: no deadline); at most
    `max_seconds` of database time. Raise OutOfTime when nothing useful is left."""
    if time_remaining is None:
        window, by_caller = max_seconds, False
    else:
        reserve = min(time_remaining * RESERVE_FRACTION, RESERVE_MAX)
        window = min(max_seconds, time_remaining - reserve)
        by_caller = window < max_seconds
        if window < MIN_WINDOW:
            raise OutOfTime(
                "the call's deadline leaves no time for the database", Reason.NO_TIME_LEFT
            )
    margin = min(window * COMMIT_MARGIN_FRACTION, COMMIT_MARGIN_MAX)
    return Budget(
        give_up=time.monotonic() + window,
        commit_by=time.time() + window - margin,
        # The database drops the work on its own by the time we stop waiting, and the
        # connection stays usable; commit_by is the exact limit.
        timeout_ms=statement_timeout_ms(None if time_remaining is None else window, max_seconds),
        window=window,
        by_caller=by_caller,
    )


def statement_timeout_ms(seconds_left: float | None, max_seconds: float) -> int:
    """The statement timeout for a call with `seconds_left` (None: no deadline).

    At most `max_seconds`; with a deadline, the largest of max, max/2, max/4, … that fits in
    the time left, so the database gives up before the caller's deadline.
    """
    ceiling = max(1, int(max_seconds * 1000))
    if seconds_left is None:
        return ceiling
    budget = int(seconds_left * 1000)
    timeout = ceiling
    while timeout > budget and timeout > 1:
        timeout //= 2
    return max(1, min(timeout, budget))
