"""Database-aware health: SERVING only while the database answers.

The probe runs on the event loop with a connection of its own, apart from the API's pool, and
gives up after its own timeout: health is answered, and follows the database, whatever the
API's calls are doing (all waiting on a frozen database, or on stalled clients).
"""

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from profile_service.errors import Reason, Unavailable
from profile_service.runtime import metrics
from profile_service.storage import db
from profile_service.storage.liveness import DatabaseLiveness

_LOGGER = logging.getLogger(__name__)
SERVICE_NAME = "profile.v1.ProfileService"
# SERVING while the process serves, whatever the database does: for liveness probes, so that a
# database outage makes pods unready instead of restarting them.
LIVENESS_SERVICE = "liveness"
# NOT_SERVING also while the database is read-only (a standby after a failover): reads still
# work, so readiness stays up, but operators and callers can see that writes are refused.
WRITES_SERVICE = "writes"
# Between probes while the database is silent: soon enough to serve again promptly after a
# thaw (a probe already waiting sees it at once), not a busy loop when connections are refused.
_SILENT_PAUSE = 0.05
# A refused connection's SQLSTATE is not kept by libpq, only its message: these are
# PostgreSQL's for 53300 (max_connections, reserved slots, a role's or a database's CONNECTION
# LIMIT). Under another lc_messages the verdict is UNREACHABLE, still UNAVAILABLE.
_NO_SLOTS_MESSAGES = (
    "too many connections",
    "too many clients already",
    "remaining connection slots are reserved",
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Database(enum.Enum):
    """What the last probe found."""

    ANSWERS = "reachable"
    # Answers, but refuses writes (a standby, default_transaction_read_only).
    READ_ONLY = "reachable, read-only"
    # Connections refused or broken: known to be down, so calls fail at once.
    UNREACHABLE = "unreachable"
    # Connections refused because every slot is taken (SQLSTATE 53300): down for us, but not
    # broken; calls fail at once, and say so.
    NO_SLOTS = "refusing connections: too many connections"
    # Connected, or connecting, but no answer in time: maybe only slow, so calls still try.
    SILENT = "not answering"


# What a call answers at once in these states: its message and reason.
_REFUSALS: dict[Database, tuple[str, str]] = {
    Database.UNREACHABLE: ("database unreachable", Reason.DATABASE_UNREACHABLE),
    Database.NO_SLOTS: (
        "the database has no connection slot free (too many connections)",
        Reason.DATABASE_OUT_OF_RESOURCES,
    ),
}


def _no_slots(exc: psycopg.Error) -> bool:
    message = str(exc)
    return exc.sqlstate == "53300" or any(m in message for m in _NO_SLOTS_MESSAGES)


class DatabaseHealthMonitor:
    """Probes the database every `interval` seconds and sets the health servicer for "" and
    the API service; regrows the pool once the database is back.

    A call that meets a database error calls `recheck()`, so the verdict follows an outage
    without waiting for the next interval. Its answers are also heard by `liveness`, which
    counts on them: the probe runs at least four times per `liveness.silent_after` (lock
    waiters alone never make a live database look silent), and back to back while the
    database is silent (serving resumes as soon as it answers).
    """

    def __init__(
        self,
        conninfo: str,
        pool: AsyncConnectionPool,
        servicer: HealthServicer,
        interval: float,
        liveness: DatabaseLiveness,
    ) -> None:
        # Always named apart from the API's connections, whatever the URL names them.
        self._conninfo = make_conninfo(
            db.with_tcp_liveness(conninfo), application_name=db.PROBE_APPLICATION_NAME
        )
        # libpq tries a multi-host URL's hosts in turn, each for connect_timeout (2 s at
        # least): a probe that gave up sooner would never reach the second host when the first
        # one hangs, and health would stay NOT_SERVING for good.
        hosts = db.host_count(self._conninfo)
        per_host = int(conninfo_to_dict(self._conninfo).get("connect_timeout") or 2)
        self._connect_seconds = hosts * max(2, per_host) + 1.0
        self._multi_host = hosts > 1
        # Whether the database commits writes before a standby confirms them (the last probe
        # that got an answer says): a write given up on may then have committed.
        self.synchronous_replication = False
        self._pool = pool
        self._servicer = servicer
        self._interval = min(interval, liveness.silent_after / 4)
        self._liveness = liveness
        # A probe waits at most this long; at least a second, so that a busy database is not
        # called down by a short interval.
        self._timeout = max(1.0, 2 * interval, 2 * liveness.silent_after)
        self._state: Database | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refill: asyncio.Task[None] | None = None

    @property
    def answers(self) -> bool:
        """True while the last probe got an answer (the database may be read-only)."""
        return self._state in (Database.ANSWERS, Database.READ_ONLY)

    def refusal(self) -> Unavailable | None:
        """What calls answer at once while the database is known down: the last probe found it
        refusing or breaking connections, or `liveness` finds it silent; None otherwise."""
        refusal = None if self._state is None else _REFUSALS.get(self._state)
        if refusal is not None:
            return Unavailable(*refusal)
        if self._liveness.silent:
            return Unavailable("the database is not answering", Reason.DATABASE_NOT_ANSWERING)
        return None

    async def start(self) -> None:
        """Report the process alive, probe once, and keep probing in a task."""
        await self._servicer.set(LIVENESS_SERVICE, _SERVING)
        await self.check_once()
        self._task = asyncio.create_task(self._loop(), name="db-health")

    async def stop(self) -> None:
        """Report NOT_SERVING from now on and stop probing."""
        await self._servicer.enter_graceful_shutdown()
        for task in (self._task, self._refill):
            if task is not None:
                task.cancel()
        if self._conn is not None:
            await self._conn.close()

    def recheck(self) -> None:
        """Probe now rather than at the next interval."""
        self._wake.set()

    async def check_once(self) -> bool:
        """Probe the database once and publish the result; True if it answered."""
        previous, state = self._state, await self._probe()
        if state is not previous:
            await self._publish(state)
        if self._multi_host and state is Database.READ_ONLY:
            # Maybe a standby libpq fell back to while the primary was down (a URL without
            # target_session_attrs=read-write): the next probe tries the hosts in order again.
            self._forget_connection()
        # Back from an outage, connections broken meanwhile are still in the pool: refill it.
        # Back on a writable host of a multi-host URL, the pool's connections may still be on
        # the standby, for their whole lifetime: replace them all (which refills it too).
        back = previous in (Database.UNREACHABLE, Database.NO_SLOTS, Database.SILENT)
        if self._multi_host and previous is Database.READ_ONLY and state is Database.ANSWERS:
            self._tend_pool(self._pool.drain, "a writable database answers again")
        elif self.answers and (back or self._pool_short()):
            self._tend_pool(self._pool.check)
        return self.answers

    async def _probe(self) -> Database:
        try:
            if self._conn is None or self._conn.closed:
                # Not a wait that tells silence (liveness): a multi-host URL's first host may
                # hang while the next one answers.
                async with asyncio.timeout(self._connect_seconds):
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True
                    )
            ticket = self._liveness.sent()
            try:
                facts = await db.write_facts(self._conn, self._timeout)
            except BaseException:
                self._liveness.unanswered(ticket)
                raise
            self._liveness.answered(ticket)
            self.synchronous_replication = facts.synchronous_replication
        except (TimeoutError, db.NoAnswer):
            self._forget_connection()
            return Database.SILENT
        except psycopg.Error as exc:
            self._forget_connection()
            return Database.NO_SLOTS if _no_slots(exc) else Database.UNREACHABLE
        return Database.READ_ONLY if facts.read_only else Database.ANSWERS

    def _forget_connection(self) -> None:
        if self._conn is not None:
            self._conn.pgconn.finish()  # no goodbye: the server may not be listening
            self._conn = None

    async def _publish(self, state: Database) -> None:
        self._state = state
        status = _SERVING if self.answers else _NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._servicer.set(name, status)
        writes = _SERVING if state is Database.ANSWERS else _NOT_SERVING
        await self._servicer.set(WRITES_SERVICE, writes)
        metrics.DB_READ_ONLY.set(1 if state is Database.READ_ONLY else 0)
        log = _LOGGER.info if state is Database.ANSWERS else _LOGGER.warning
        log(
            "database %s; health %s, writes %s",
            state.value,
            health_pb2.HealthCheckResponse.ServingStatus.Name(status),
            health_pb2.HealthCheckResponse.ServingStatus.Name(writes),
        )

    def _pool_short(self) -> bool:
        stats = self._pool.get_stats()
        return bool(stats.get("pool_size", 0) < self._pool.min_size)

    def _tend_pool(self, work: Callable[[], Coroutine[Any, Any, None]], why: str = "") -> None:
        """Run `work` on the pool (check: drop dead connections and open the missing ones;
        drain: replace them all) in a task the probe loop never waits for, one at a time."""
        if self._refill is None or self._refill.done():
            if why:
                _LOGGER.info("%s: replacing the pool's connections", why)
            self._refill = asyncio.create_task(work(), name="db-pool")

    async def _loop(self) -> None:
        while True:
            try:
                pause = _SILENT_PAUSE if self._liveness.silent else self._interval
                async with asyncio.timeout(pause):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.check_once()
            metrics.observe_pool(self._pool)
