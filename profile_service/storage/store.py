"""How repository.py's queries reach the database (repository.Runner): one query per call,
run on a pooled connection within the call's budget, and every psycopg failure turned into the
ServiceError a caller can act on (errors.py)."""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from profile_service.domain import deadlines
from profile_service.errors import (
    Aborted,
    AlreadyExists,
    OutOfTime,
    PermissionDenied,
    Reason,
    ServiceError,
    Unavailable,
)
from profile_service.storage import db
from profile_service.storage.liveness import DatabaseLiveness

T = TypeVar("T")
# What the write functions raise when the profile lacks the etag the call requires (0007).
PRECONDITION_FAILED = "PF412"
# What undelete raises on an active profile (0008).
NOT_DELETED = "PF409"


class ProfileStore:
    """Runs queries on `pool`.

    `database_refusal()` is what calls answer while the database is known down (the health
    monitor's verdict: refusing connections, or silent): calls then answer at once instead of
    waiting out their budget. `liveness` hears each round trip, and tells a call whose
    deadline was too short for this database from one the database failed.
    `synchronous_replication()` says whether a write given up on may still have committed.
    `on_database_error()` asks the monitor to look again. `database_span(statement)`, when
    tracing is on (tracing.py), is the span around each call's checkout and round trip.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        db_timeout_seconds: float,
        liveness: DatabaseLiveness,
        database_refusal: Callable[[], ServiceError | None] = lambda: None,
        synchronous_replication: Callable[[], bool] = lambda: False,
        on_database_error: Callable[[], None] = lambda: None,
        database_span: Callable[[db.Statement], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._pool = pool
        self._db_timeout = db_timeout_seconds
        self._liveness = liveness
        self._database_refusal = database_refusal
        self._synchronous_replication = synchronous_replication
        self._on_database_error = on_database_error
        self._database_span = database_span

    async def run(self, query_for: Callable[[float], db.Query[T]], deadline: float | None) -> T:
        """Run the query made for the call's commit_by, within the call's budget."""
        budget = deadlines.budget(
            None if deadline is None else deadline - time.monotonic(), self._db_timeout
        )
        if (refusal := self._database_refusal()) is not None:
            raise refusal
        query = query_for(budget.commit_by)
        if self._database_span is None:  # tracing off: not even a no-op span
            return await self._run(query, budget)
        with self._database_span(query.statement):
            return await self._run(query, budget)

    async def _run(self, query: db.Query[T], budget: deadlines.Budget) -> T:
        """`query` on a pooled connection, its failures as ServiceErrors."""
        try:
            # getconn/putconn rather than the pool.connection() context manager: same
            # behaviour, a few microseconds less per call.
            conn = await self._pool.getconn(timeout=budget.seconds_left())
            try:
                return await self._round_trip(conn, query, budget)
            finally:
                await self._pool.putconn(conn)
        except PoolTimeout as exc:
            self._on_database_error()
            raise self._unless_too_short(
                budget,
                Unavailable("no database connection free in time", Reason.DATABASE_POOL_EXHAUSTED),
            ) from exc
        except db.NoAnswer as exc:
            self._on_database_error()
            if query.statement.writes and self._synchronous_replication():
                # Committed locally, then waiting for the standby when given up on: commit_by
                # was checked before that wait (decision 1). Not "nothing was written".
                raise Unavailable(
                    "the write may have been committed (a synchronous standby did not confirm "
                    "it in time): read it back, its etag tells",
                    Reason.WRITE_OUTCOME_UNKNOWN,
                ) from exc
            raise self._unless_too_short(
                budget,
                Unavailable("the database did not answer in time", Reason.DATABASE_NOT_ANSWERING),
            ) from exc
        except psycopg.Error as exc:
            error = self._service_error(exc)
            if error is None:
                raise  # a bug: INTERNAL, by internal_errors.py
            if isinstance(exc, psycopg.errors.QueryCanceled):
                error = self._unless_too_short(budget, error)
            raise error from exc

    async def _round_trip(
        self, conn: psycopg.AsyncConnection, query: db.Query[T], budget: deadlines.Budget
    ) -> T:
        """db.run, telling `liveness` whether the database answered."""
        ticket = self._liveness.sent()
        try:
            result = await db.run(conn, query, budget)
        except psycopg.Error as exc:
            if exc.sqlstate is None:  # no answer: the connection broke
                self._liveness.unanswered(ticket)
            else:
                self._liveness.answered(ticket)
            raise
        except BaseException:
            self._liveness.unanswered(ticket)
            raise
        self._liveness.answered(ticket)
        return result

    def _unless_too_short(self, budget: deadlines.Budget, error: ServiceError) -> ServiceError:
        """`error`, or DEADLINE_EXCEEDED when the caller's deadline gave the database fewer
        seconds than its recent round trips need: the caller's choice, not a fault."""
        if budget.by_caller and self._liveness.too_short(budget.window):
            return OutOfTime(
                f"the call's deadline left the database {budget.window * 1000:.1f} ms, too "
                "little for its recent round trips: allow more time",
                Reason.DEADLINE_TOO_SHORT,
            )
        return error

    def _service_error(self, exc: psycopg.Error) -> ServiceError | None:
        """The ServiceError a database failure stands for; None for an unexpected one."""
        state = exc.sqlstate
        if state is None:  # no answer: the connection broke, or none could be made
            if not isinstance(exc, psycopg.OperationalError):
                return None
            self._on_database_error()
            return Unavailable("database unavailable", Reason.DATABASE_UNREACHABLE)
        if state == NOT_DELETED:
            return AlreadyExists("the profile is not deleted", Reason.PROFILE_ACTIVE)
        if state == PRECONDITION_FAILED:
            return Aborted(
                "the profile does not have the etag the call requires: read it again",
                Reason.ETAG_MISMATCH,
            )
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return Unavailable("database timed out", Reason.DATABASE_TIMEOUT)
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            self._on_database_error()
            return Unavailable(
                "the database is read-only for now (a failover?)", Reason.DATABASE_READ_ONLY
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return PermissionDenied("not allowed by row-level security", Reason.ROW_LEVEL_SECURITY)
        # The database answered, and refused for now (class 53: disk full, out of memory, too
        # many connections; 40: serialization or deadlock; 57: shutting down).
        if state.startswith("53"):
            return Unavailable(
                f"the database is out of resources ({state})", Reason.DATABASE_OUT_OF_RESOURCES
            )
        if isinstance(exc, psycopg.OperationalError):
            return Unavailable(f"the database refused the call ({state})", Reason.DATABASE_REFUSED)
        return None
