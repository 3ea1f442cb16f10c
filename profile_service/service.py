"""The use cases. Each decides who may call it, then runs one RLS-scoped transaction.

Errors are the ServiceErrors of errors.py, which also says how they are sent.
"""

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from profile_service import db, deadlines, metrics, repository
from profile_service.auth import Caller
from profile_service.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from profile_service.repository import Row
from profile_service.validation import (
    check_fields,
    check_owner_id,
    check_purge,
    check_update_mask,
)

T = TypeVar("T")

DEFAULT_PURGE_BATCH = 1000


class ProfileService:
    """Get, Upsert, SoftDelete and Purge over a connection pool.

    `database_unreachable()` tells whether the database is known to refuse connections (the
    health monitor's verdict): calls then answer at once instead of waiting out their budget.
    `on_database_error()` asks the monitor to look again.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        min_retention_days: int,
        db_timeout_seconds: float,
        database_unreachable: Callable[[], bool] = lambda: False,
        on_database_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._min_retention_days = min_retention_days
        self._db_timeout = db_timeout_seconds
        self._database_unreachable = database_unreachable
        self._on_database_error = on_database_error

    async def get(self, caller: Caller, owner_id: str, deadline: float | None) -> Row:
        """A user's own active profile, or (service_role) anyone's, deleted ones included."""
        _raise_if_invalid(check_owner_id(owner_id, "owner_id"))
        if caller.is_user:
            owner_id = _own_owner_id(caller, owner_id)
        elif not owner_id:
            raise InvalidArgument([FieldViolation("owner_id", "is required for service_role")])
        query = repository.get(caller, owner_id)
        return _found(await self._run(lambda _: query, deadline))

    async def upsert(
        self,
        caller: Caller,
        owner_id: str,
        values: Mapping[str, Any],
        mask: frozenset[str],
        deadline: float | None,
    ) -> Row:
        """Create or update the caller's own profile (users only)."""
        _require_user(caller)
        changes = {k: v for k, v in values.items() if k in mask}
        _raise_if_invalid(
            check_owner_id(owner_id, "profile.owner_id")
            + check_update_mask(mask)
            + check_fields(changes)
        )
        _own_owner_id(caller, owner_id)
        return _found(
            await self._run(
                lambda commit_by: repository.upsert(caller, changes, mask, commit_by), deadline
            )
        )

    async def soft_delete(self, caller: Caller, owner_id: str, deadline: float | None) -> Row:
        """Soft-delete the caller's own active profile (users only)."""
        _require_user(caller)
        _raise_if_invalid(check_owner_id(owner_id, "owner_id"))
        _own_owner_id(caller, owner_id)
        return _found(
            await self._run(lambda commit_by: repository.soft_delete(caller, commit_by), deadline)
        )

    async def purge(
        self,
        caller: Caller,
        retention_days: int,
        dry_run: bool,
        batch_size: int,
        deadline: float | None,
        should_continue: Callable[[], bool] = lambda: True,
    ) -> int:
        """Delete (or count) profiles soft-deleted over `retention_days` ago; service_role only.

        Between batches, stops early once `should_continue()` is false (the caller went away).
        """
        if caller.role != "service_role":
            raise PermissionDenied("Purge is for service_role only", "ROLE_NOT_ALLOWED")
        _raise_if_invalid(check_purge(retention_days, batch_size, self._min_retention_days))
        days = retention_days or self._min_retention_days
        limit = batch_size or DEFAULT_PURGE_BATCH
        if dry_run:
            return await self._run(
                lambda commit_by: repository.purge_batch(caller, days, limit, True, commit_by),
                deadline,
            )
        total = 0
        # One transaction per batch keeps locks short. Stop only on an empty batch: a short one
        # may just mean a concurrent purge took some rows. A caller that cancelled (a CronJob
        # killed, a connection closed for its age) leaves the rest to the next run.
        while True:
            deleted = await self._run(
                lambda commit_by: repository.purge_batch(caller, days, limit, False, commit_by),
                deadline,
            )
            total += deleted
            metrics.PURGED.inc(deleted)
            if deleted == 0 or not should_continue():
                return total

    async def _run(self, query_for: Callable[[float], db.Query[T]], deadline: float | None) -> T:
        """Run the query made for the call's commit_by, within the call's budget."""
        budget = deadlines.budget(
            None if deadline is None else deadline - time.monotonic(), self._db_timeout
        )
        if self._database_unreachable():
            raise Unavailable("database unreachable", "DATABASE_UNREACHABLE")
        try:
            # getconn/putconn rather than the pool.connection() context manager: same
            # behaviour, a few microseconds less per call.
            conn = await self._pool.getconn(timeout=budget.seconds_left())
            try:
                return await db.run(conn, query_for(budget.commit_by), budget)
            finally:
                await self._pool.putconn(conn)
        except PoolTimeout as exc:
            self._on_database_error()
            raise Unavailable(
                "no database connection free in time", "DATABASE_POOL_EXHAUSTED"
            ) from exc
        except db.NoAnswer as exc:
            self._on_database_error()
            raise Unavailable(
                "the database did not answer in time", "DATABASE_NOT_ANSWERING"
            ) from exc
        except psycopg.errors.QueryCanceled as exc:
            raise Unavailable("database timed out", "DATABASE_TIMEOUT") from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            self._on_database_error()
            raise Unavailable(
                "the database is read-only for now (a failover?)", "DATABASE_READ_ONLY"
            ) from exc
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:  # no answer: the connection broke, or none could be made
                self._on_database_error()
                raise Unavailable("database unavailable", "DATABASE_UNREACHABLE") from exc
            # The database answered, and refused for now (class 53: disk full, out of memory,
            # too many connections; 40: serialization or deadlock; 57: shutting down).
            if exc.sqlstate.startswith("53"):
                raise Unavailable(
                    f"the database is out of resources ({exc.sqlstate})",
                    "DATABASE_OUT_OF_RESOURCES",
                ) from exc
            raise Unavailable(
                f"the database refused the call ({exc.sqlstate})", "DATABASE_REFUSED"
            ) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PermissionDenied(
                "not allowed by row-level security", "ROW_LEVEL_SECURITY"
            ) from exc


def _require_user(caller: Caller) -> None:
    if not caller.is_user:
        raise PermissionDenied("only a signed-in user may change its profile", "ROLE_NOT_ALLOWED")


def _own_owner_id(caller: Caller, owner_id: str) -> str:
    """The caller's own id; naming anyone else's is PermissionDenied."""
    assert caller.sub is not None  # guaranteed for role authenticated by auth
    if owner_id and owner_id.lower() != caller.sub.lower():
        raise PermissionDenied("a user may only name its own owner_id", "NOT_OWN_PROFILE")
    return caller.sub


def _raise_if_invalid(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _found(row: Row | None) -> Row:
    if row is None:
        raise NotFound("profile not found", "PROFILE_NOT_FOUND")
    return row
