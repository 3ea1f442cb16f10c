"""The database boundary: a connection pool, and one statement per request, never waited on
past the call's budget.

Every RPC is a single call of a `profile_api` function (migrations 0002 and 0005), which
switches to the caller's role and sets its claims transaction-locally before its query: one
statement, one implicit transaction, one round trip. Nothing survives on the pooled connection
afterwards, and the login role itself can read nothing, so forgetting the role fails instead of
bypassing RLS.

The statements are prepared when the pool opens a connection, and a call runs one of them
through libpq's asynchronous API directly (`psycopg.pq`): Bind, Execute and Sync, one round
trip, no Parse; the event loop waits for the socket. We chose this over psycopg's
`AsyncCursor.execute` for two reasons: it costs less CPU per call (no adaptation or
prepared-statement bookkeeping; decision 2 and bench/README.md have the figures), and psycopg
answers a cancelled wait by cancelling the query and then waiting for the server with no
limit, which a frozen database never ends. Here a
call that reaches its `give_up` time closes its connection at once (the pool opens a new
one) and raises NoAnswer; whatever the database does with the statement later cannot commit,
since the write functions check the call's `commit_by` at commit (deadlines.py).

The only session setting is `statement_timeout`, which is not a security setting: it is set
when a connection is opened, and changed only when a call needs a different one, pipelined with
that call's statement (still one round trip, one implicit transaction: if the call fails, the
change is rolled back with it). Timeouts are rounded down to a short ladder (the maximum, then
halves) so that callers with similar deadlines reuse one setting. It makes the database drop
work nobody waits for (a lock wait) on its own, without costing the connection.

Without prepared statements (`DB_PREPARE=false`, for PgBouncer in transaction mode) nothing at
all is left on a server connection, since the next transaction on it may be another client's:
every call pipelines a transaction-local `statement_timeout` with its unnamed statement.
"""

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from profile_service.domain.deadlines import Budget

T = TypeVar("T")

# What a statement returns: the text of its one column in its first row, or None (no row).
Value = bytes | None

# A database host that vanishes without closing its connections (a network partition, a dead
# machine) would otherwise leave a connection open until the kernel gives up: many minutes.
# Calls no longer wait for it (their budget), but the pool would keep lending it. These libpq
# settings break such a connection within about 20 s; a URL that sets its own wins.
TCP_LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",  # ms: sent data unacknowledged for this long breaks it
    # A server that accepts the connection and then says nothing (frozen) would hold a
    # connection attempt, and the pool's worker making it, for over two minutes.
    "connect_timeout": "5",
}

# psycopg_pool retries a lost connection with a delay that doubles without a cap (1, 2, 4 …
# 32 s): after an outage the pool came back many seconds after the database. Its own retries
# stay short; the health monitor regrows the pool as soon as the database answers again.
POOL_RECONNECT_SECONDS = 1.0

# What pg_stat_activity shows for the API's connections and the health probe's.
POOL_APPLICATION_NAME = "profile-service"
PROBE_APPLICATION_NAME = "profile-service-health"

_SET_TIMEOUT = b"SELECT set_config('statement_timeout', $1, false)"
_SET_LOCAL_TIMEOUT = b"SELECT set_config('statement_timeout', $1, true)"


class NoAnswer(Exception):
    """The database did not answer within the call's budget; its connection was closed."""


@dataclass(frozen=True)
class Statement:
    """A fixed statement with `$n` parameters, prepared on every connection under `name`."""

    name: str
    sql: str
    # What each `$n` is, in order: the SQL documented where it is written, and what a test
    # reads a query by (Query.named).
    parameters: tuple[str, ...] = ()
    # Whether it writes: a write given up on may still commit under synchronous replication.
    writes: bool = False

    @cached_property
    def function(self) -> str:
        """The `profile_api` function the statement calls (what a trace's span shows)."""
        # The last one: the row's own columns may call helpers (profile_api.etag) before it.
        called = re.findall(r"\bprofile_api\.\w+(?=\()", self.sql)
        return called[-1] if called else self.name

    @cached_property
    def name_bytes(self) -> bytes:
        """`name` as libpq takes it (encoded once, not per call)."""
        return self.name.encode()

    @cached_property
    def sql_bytes(self) -> bytes:
        """`sql` as libpq takes it."""
        return self.sql.encode()


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


_sessions: "WeakKeyDictionary[psycopg.AsyncConnection, _Session]" = WeakKeyDictionary()


def with_tcp_liveness(conninfo: str, application_name: str | None = None) -> str:
    """`conninfo` with the TCP_LIVENESS settings it does not set itself, and
    `application_name` (what pg_stat_activity shows) unless it names one."""
    given = conninfo_to_dict(conninfo)
    defaults = {**TCP_LIVENESS, "application_name": application_name or ""}
    return make_conninfo(conninfo, **{k: v for k, v in defaults.items() if k not in given and v})


def host_count(conninfo: str) -> int:
    """How many hosts `conninfo` lists: libpq tries them in turn (a failover setup)."""
    params = conninfo_to_dict(conninfo)
    return len(str(params.get("host") or params.get("hostaddr") or "-").split(","))


def create_pool(
    conninfo: str,
    *,
    size: int,
    prepare: bool,
    statements: Sequence[Statement],
    timeout_ms: int,
) -> AsyncConnectionPool:
    """A closed pool of `size` autocommit connections; `await pool.open()` starts it.

    With `prepare`, each new connection gets the `statements` prepared and `timeout_ms` as
    its statement_timeout. `prepare=False` is for PgBouncer in transaction mode, where neither
    a prepared statement nor a session setting stays with us: each call then sends its
    statement unnamed, behind a transaction-local timeout (still one round trip). The queries
    inside the profile_api functions are planned once per session by PL/pgSQL either way.
    """

    async def configure(conn: psycopg.AsyncConnection) -> None:
        if not prepare:
            return
        # A database that stops answering while we set up must not hold the pool's worker.
        setup = _wait_only(timeout_ms / 1000)
        pgconn = conn.pgconn
        pgconn.send_query_params(_SET_TIMEOUT, [str(timeout_ms).encode()])
        await _finish(conn, setup)
        for statement in statements:
            pgconn.send_prepare(statement.name_bytes, statement.sql_bytes)
            await _finish(conn, setup)
        _sessions[conn] = _Session(timeout_ms)

    return AsyncConnectionPool(
        with_tcp_liveness(conninfo, POOL_APPLICATION_NAME),
        min_size=size,
        max_size=size,
        open=False,
        name="profile",
        configure=configure,
        reconnect_timeout=POOL_RECONNECT_SECONDS,
        # Our statements are prepared by `configure`; psycopg's own preparing stays off, so
        # that nothing else is prepared behind PgBouncer either.
        kwargs={"autocommit": True, "prepare_threshold": None},
    )


async def run(conn: psycopg.AsyncConnection, query: Query[T], budget: Budget) -> T:
    """Run `query` on `conn` (from a pool made by create_pool) in one round trip, waiting no
    later than `budget.give_up`, under `budget.timeout_ms`. Raise NoAnswer (the connection is
    then closed), or the psycopg error the database answered with."""
    timeout_ms = budget.timeout_ms
    params = [None if p is None else p.encode() for p in query.params]
    pgconn = conn.pgconn
    session = _sessions.get(conn)
    try:
        if session is not None and session.timeout_ms == timeout_ms:
            pgconn.send_query_prepared(query.statement.name_bytes, params)
            result = await _finish(conn, budget)
        else:
            set_timeout = _SET_LOCAL_TIMEOUT if session is None else _SET_TIMEOUT
            result = await _pipelined(conn, query, set_timeout, timeout_ms, params, budget)
            if session is not None:
                session.timeout_ms = timeout_ms
    except BaseException:
        # Given up, cancelled or broken: the connection may still owe us an answer, so it
        # cannot be lent again. The pool replaces it.
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            _abandon(pgconn)
        raise
    return query.read(result.get_value(0, 0) if result.ntuples else None)


_CANCEL_SECONDS = 5.0
_cancels: set["asyncio.Task[None]"] = set()  # kept referenced until done


def _abandon(pgconn: pq.abc.PGconn) -> None:
    """Close `pgconn` now, and ask the server, in the background, to cancel what it runs.

    Closing alone does not stop a statement the server has received: it would run on (a lock
    wait) and commit if it could. The cancel stops it when the server is listening; when it
    is not (frozen), commit_by still forbids a late commit.
    """
    try:
        cancel = pgconn.cancel_conn()
        cancel.start()
    except psycopg.Error:
        cancel = None
    pgconn.finish()
    if cancel is not None:
        task = asyncio.get_running_loop().create_task(_send_cancel(cancel))
        _cancels.add(task)
        task.add_done_callback(_cancels.discard)


async def _send_cancel(cancel: pq.abc.PGcancelConn) -> None:
    """Drive libpq's non-blocking cancel request to its end, or give up after a while."""
    budget = _wait_only(_CANCEL_SECONDS)
    try:
        while True:
            status = cancel.poll()
            if status in (pq.PollingStatus.OK, pq.PollingStatus.FAILED):
                return
            await _ready(cancel.socket, budget, write=status != pq.PollingStatus.READING)
    except (NoAnswer, psycopg.Error):
        pass  # the server is not listening: commit_by is the guard then
    finally:
        cancel.finish()


async def _pipelined(
    conn: psycopg.AsyncConnection,
    query: Query[T],
    set_timeout: bytes,
    ms: int,
    params: Sequence[bytes | None],
    budget: Budget,
) -> pq.abc.PGresult:
    """`set_timeout` then the unnamed statement, one Sync: one round trip, one transaction."""
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    try:
        pgconn.send_query_params(set_timeout, [str(ms).encode()])
        pgconn.send_query_params(query.statement.sql_bytes, params)
        pgconn.pipeline_sync()
        await _flush(pgconn, budget)
        answers: list[pq.abc.PGresult] = []
        while True:
            result = await _next_result(pgconn, budget)
            if result is None:
                continue  # the end of one statement's results
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
            answers.append(result)
    finally:
        if pgconn.status == pq.ConnStatus.OK and not pgconn.is_busy():
            pgconn.exit_pipeline_mode()
    for answer in answers:  # the first failure is the one that aborted the pipeline
        _check(conn, answer)
    return answers[-1]


async def _finish(conn: psycopg.AsyncConnection, budget: Budget) -> pq.abc.PGresult:
    """Flush what was sent, then read the statement's results; the last one, checked."""
    pgconn = conn.pgconn
    await _flush(pgconn, budget)
    last = None
    while (result := await _next_result(pgconn, budget)) is not None:
        last = result
    if last is None:  # pragma: no cover - libpq always gives a statement a result
        raise psycopg.OperationalError("no result from the database")
    _check(conn, last)
    return last


async def _flush(pgconn: pq.abc.PGconn, budget: Budget) -> None:
    while pgconn.flush():
        await _ready(pgconn.socket, budget, write=True)


async def _next_result(pgconn: pq.abc.PGconn, budget: Budget) -> pq.abc.PGresult | None:
    while pgconn.is_busy():
        await _ready(pgconn.socket, budget, write=False)
        pgconn.consume_input()  # raises OperationalError on a broken connection
    return pgconn.get_result()


async def _ready(fd: int, budget: Budget, *, write: bool) -> None:
    """Wait until socket `fd` is readable (writable), or raise NoAnswer at budget.give_up."""
    loop = asyncio.get_running_loop()
    if loop.time() >= budget.give_up:
        raise NoAnswer()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    expire = loop.call_at(budget.give_up, wake)
    try:
        await ready
    finally:
        expire.cancel()
        (loop.remove_writer if write else loop.remove_reader)(fd)
    if loop.time() >= budget.give_up:
        raise NoAnswer()


def _check(conn: psycopg.AsyncConnection, result: pq.abc.PGresult) -> None:
    """Raise the psycopg exception `result` stands for, as Cursor.execute would."""
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return
    if conn.pgconn.status != pq.ConnStatus.OK:
        # Lost mid-call: the pool sees the broken connection when it is returned and drops it.
        raise psycopg.OperationalError("the connection to the database is lost")
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


# A standby (a failover in progress) or a database set read-only takes reads, refuses writes.
# Synchronous replication: a commit waits for a standby after the local commit, past commit_by.
_WRITE_FACTS = (
    b"SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool, "
    b"current_setting('synchronous_standby_names') <> '' "
    b"AND current_setting('synchronous_commit') NOT IN ('off', 'local')"
)


@dataclass(frozen=True)
class WriteFacts:
    """What the database does with writes: refuses them; commits them before a standby
    confirms them."""

    read_only: bool
    synchronous_replication: bool


async def write_facts(conn: psycopg.AsyncConnection, seconds: float) -> WriteFacts:
    """WriteFacts of the database behind `conn`, waiting at most `seconds`; raise NoAnswer
    (the connection is then closed) or the psycopg error met."""
    read_only, synchronous = await query_row(conn, _WRITE_FACTS, seconds)
    return WriteFacts(read_only == b"t", synchronous == b"t")


async def query_row(
    conn: psycopg.AsyncConnection, sql: bytes, seconds: float
) -> tuple[bytes | None, ...]:
    """The first row of `sql` (no parameters) as text values, waiting at most `seconds`; raise
    NoAnswer (the connection is then closed) or the psycopg error met."""
    budget = _wait_only(seconds)
    pgconn = conn.pgconn
    pgconn.send_query(sql)
    try:
        result = await _finish(conn, budget)
    except BaseException:
        pgconn.finish()
        raise
    if not result.ntuples:
        raise psycopg.DataError("the query returned no row")
    return tuple(result.get_value(0, i) for i in range(result.nfields))


def _wait_only(seconds: float) -> Budget:
    """A budget for work that writes nothing: only how long to wait."""
    return Budget(give_up=asyncio.get_running_loop().time() + seconds, commit_by=0, timeout_ms=0)
