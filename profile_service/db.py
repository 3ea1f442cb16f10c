"""The database boundary: a connection pool, and one statement per request.

Every RPC is a single call of a `profile_api` function (migration 0002), which switches to the
caller's role and sets its claims transaction-locally before its query: one statement, one
implicit transaction, one round trip. Nothing survives on the pooled connection afterwards,
and the login role itself can read nothing, so forgetting the role fails instead of bypassing
RLS.

The statements are prepared when the pool opens a connection, and a call runs one of them
through libpq directly (`psycopg.pq`): Bind, Execute and Sync, one round trip, no Parse. We
chose this over `Cursor.execute`, which costs about 30 us more client CPU per call (its
adaptation, prepared-statement bookkeeping and wait loop): a third of what a Get costs us
besides gRPC. libpq does the blocking wait with the GIL released.

The only session setting is `statement_timeout`, which is not a security setting: it is set
when a connection is opened, and changed only when a call needs a different one, pipelined with
that call's statement (still one round trip, one implicit transaction: if the call fails, the
change is rolled back with it). Timeouts are rounded down to a short ladder (the maximum, then
halves) so that callers with similar deadlines reuse one setting.

Without prepared statements (`DB_PREPARE=false`, for PgBouncer in transaction mode) nothing at
all is left on a server connection, since the next transaction on it may be another client's:
every call pipelines a transaction-local `statement_timeout` with its unnamed statement.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar, cast
from weakref import WeakKeyDictionary

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

T = TypeVar("T")

# What a statement returns: the text of its one column in its first row, or None (no row).
Value = bytes | None

# A database host that vanishes without closing its connections (a network partition, a dead
# machine) would otherwise hold a blocked call, and the health check, until the kernel gives
# up: many minutes. statement_timeout cannot help: nobody is there to enforce it. These libpq
# settings break such a connection within about 20 s; a URL that sets its own wins.
TCP_LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",  # ms: sent data unacknowledged for this long breaks it
}

_SET_TIMEOUT = "SELECT set_config('statement_timeout', $1, false)"
_SET_LOCAL_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"


@dataclass(frozen=True)
class Statement:
    """A fixed statement with `$n` parameters, prepared on every connection under `name`."""

    name: str
    sql: str

    @cached_property
    def name_bytes(self) -> bytes:
        """`name` as libpq takes it (encoded once, not per call)."""
        return self.name.encode()


@dataclass(frozen=True)
class Query(Generic[T]):
    """A statement, its text parameters (None for NULL), and how to read its one value."""

    statement: Statement
    params: tuple[str | None, ...]
    read: Callable[[Value], T]


@dataclass
class _Session:
    """A pooled connection with our statements prepared, and its session timeout."""

    timeout_ms: int


_sessions: "WeakKeyDictionary[psycopg.Connection, _Session]" = WeakKeyDictionary()


def with_tcp_liveness(conninfo: str) -> str:
    """`conninfo` with the TCP_LIVENESS settings it does not set itself."""
    given = conninfo_to_dict(conninfo)
    return make_conninfo(conninfo, **{k: v for k, v in TCP_LIVENESS.items() if k not in given})


def create_pool(
    conninfo: str,
    *,
    size: int,
    prepare: bool,
    statements: Sequence[Statement],
    timeout_ms: int,
) -> ConnectionPool:
    """A closed pool of `size` autocommit connections; call `.open()` to start it.

    With `prepare`, each new connection gets the `statements` prepared and `timeout_ms` as
    its statement_timeout. `prepare=False` is for PgBouncer in transaction mode, where neither
    a prepared statement nor a session setting stays with us: each call then sends its
    statement unnamed, behind a transaction-local timeout (still one round trip). The queries
    inside the profile_api functions are planned once per session by PL/pgSQL either way.
    """

    def configure(conn: psycopg.Connection) -> None:
        if not prepare:
            return
        psycopg.RawCursor(conn).execute(_SET_TIMEOUT, (str(timeout_ms),), prepare=False)
        for statement in statements:
            _check(conn, conn.pgconn.prepare(statement.name_bytes, statement.sql.encode()))
        _sessions[conn] = _Session(timeout_ms)

    return ConnectionPool(
        with_tcp_liveness(conninfo),
        min_size=size,
        max_size=size,
        open=False,
        name="profile",
        configure=configure,
        # Keep retrying a lost database for as long as the process lives.
        reconnect_timeout=float("inf"),
        # Our statements are prepared by `configure`; psycopg's own preparing stays off, so
        # that nothing else (health checks) is prepared behind PgBouncer either.
        kwargs={"autocommit": True, "prepare_threshold": None},
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


def run(conn: psycopg.Connection, query: Query[T], *, timeout_ms: int) -> T:
    """Run `query` on `conn` (from a pool made by create_pool) with `timeout_ms`, in one round
    trip.

    Usually the prepared statement alone. When the session's timeout must change, or nothing
    is prepared (PgBouncer), the statement rides in a pipeline behind the timeout.
    """
    session = _sessions.get(conn)
    if session is None:
        return _pipelined(conn, query, _SET_LOCAL_TIMEOUT, timeout_ms)
    if session.timeout_ms != timeout_ms:
        answer = _pipelined(conn, query, _SET_TIMEOUT, timeout_ms)
        session.timeout_ms = timeout_ms
        return answer
    # None is NULL to libpq (psycopg's own dumpers pass it so), whatever the stub says.
    params = cast(list[bytes], [None if p is None else p.encode() for p in query.params])
    result = conn.pgconn.exec_prepared(query.statement.name_bytes, params)
    _check(conn, result)
    return query.read(result.get_value(0, 0) if result.ntuples else None)


def _pipelined(conn: psycopg.Connection, query: Query[T], set_timeout: str, ms: int) -> T:
    """`set_timeout` then the unnamed statement, one Sync: one round trip, one transaction."""
    cur = psycopg.RawCursor(conn)
    with conn.pipeline():
        cur.execute(set_timeout, (str(ms),), prepare=False)
        cur.execute(query.statement.sql, query.params, prepare=False)
    result = cur.pgresult
    return query.read(result.get_value(0, 0) if result is not None and result.ntuples else None)


def _check(conn: psycopg.Connection, result: pq.abc.PGresult) -> None:
    """Raise the psycopg exception `result` stands for, as Cursor.execute would."""
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return
    if conn.pgconn.status != pq.ConnStatus.OK:
        # Lost mid-call: the pool sees the broken connection when it is returned and drops it.
        raise psycopg.OperationalError("the connection to the database is lost")
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
