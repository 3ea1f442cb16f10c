"""What the service has heard from the database lately, and what it makes of it.

Two answers depend on it (contract §4, "Deadlines and retries"):

- **Has the database gone silent?** A request has waited longer than `silent_after` seconds
  and nothing at all has come back from the database meanwhile, on any connection: not an
  API call's answer, not the health probe's. New calls then answer UNAVAILABLE at once (the
  health monitor's refusal, which store.py asks before each call) instead of each waiting
  out its deadline, so a client's retry still has time to reach a healthy replica. It lasts
  until the database is heard again, which the probe (health.py, back to back while silent)
  finds out. A slow but alive database does not trip
  it: lock waiters wait, but the other calls and the probe keep being answered.
- **Was a call's deadline too short for this database?** A call that ran out of time whose
  window was shorter than SHORT_WINDOW_FACTOR times the median of the recent round trips
  was the caller's choice, not a fault: DEADLINE_EXCEEDED, which retrying with the same
  deadline cannot fix, rather than UNAVAILABLE, which pages whoever alerts on it.
"""

import logging
import statistics
import time

from profile_service.runtime import metrics

_LOGGER = logging.getLogger(__name__)

# A call that gives up within this many typical round trips asked too little of the database.
SHORT_WINDOW_FACTOR = 4.0
# The round trips the median is taken over: enough to ride out a lock wait or two, recent
# enough to follow the database's pace.
ROUND_TRIPS_KEPT = 64
# No verdict against a caller before this many: a new connection's first calls are slow (the
# functions' plans are made), and one of them alone is no measure of the database.
ROUND_TRIPS_NEEDED = 8


class DatabaseLiveness:
    """Requests sent to the database and answers heard from it (all on the event loop)."""

    def __init__(self, silent_after: float) -> None:
        self.silent_after = silent_after
        self._last_heard = time.monotonic()
        self._waiting: dict[int, float] = {}  # ticket → when its request was sent
        self._tickets = 0
        self._silent_since: float | None = None
        self._round_trips: list[float] = []
        self._next_slot = 0

    def sent(self) -> int:
        """A request is on its way; the ticket goes back to `answered` or `unanswered`."""
        ticket = self._tickets
        self._tickets += 1
        self._waiting[ticket] = time.monotonic()
        return ticket

    def answered(self, ticket: int) -> None:
        """The database answered the request (a result or an error of its own)."""
        now = time.monotonic()
        sent = self._waiting.pop(ticket, None)
        if sent is not None:
            if len(self._round_trips) < ROUND_TRIPS_KEPT:
                self._round_trips.append(now - sent)
            else:
                self._round_trips[self._next_slot] = now - sent
                self._next_slot = (self._next_slot + 1) % ROUND_TRIPS_KEPT
        self._last_heard = now
        if self._silent_since is not None:
            _LOGGER.warning(
                "database answers again after %.1f s of silence", now - self._silent_since
            )
            self._silent_since = None
            metrics.DB_SILENT.set(0)

    def unanswered(self, ticket: int) -> None:
        """The request got no answer (given up, connection broken or refused)."""
        self._waiting.pop(ticket, None)

    @property
    def silent(self) -> bool:
        """True once a request has waited `silent_after` seconds with nothing heard since;
        until the database is heard again."""
        if self._silent_since is not None:
            return True
        now = time.monotonic()
        if now - self._last_heard <= self.silent_after:
            return False  # the common case: one subtraction per call
        oldest = min(self._waiting.values(), default=now)
        if now - oldest <= self.silent_after:
            return False
        self._silent_since = now
        metrics.DB_SILENT.set(1)
        _LOGGER.warning(
            "database silent for %.1f s: calls answer UNAVAILABLE at once until it answers",
            now - self._last_heard,
        )
        return True

    @property
    def typical_round_trip(self) -> float | None:
        """The median of the recent round trips, in seconds (None before ROUND_TRIPS_NEEDED)."""
        if len(self._round_trips) < ROUND_TRIPS_NEEDED:
            return None
        return statistics.median(self._round_trips)

    def too_short(self, window: float) -> bool:
        """Whether `window` seconds were too few for this database's recent round trips."""
        typical = self.typical_round_trip
        return typical is not None and window < SHORT_WINDOW_FACTOR * typical
