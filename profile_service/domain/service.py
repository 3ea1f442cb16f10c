"""The use cases. Each decides who may call it, then runs one RLS-scoped transaction.

The database is behind `Store` (store.py, or a fake in the unit tests); errors are the
ServiceErrors of errors.py, which also says how they are sent.
"""

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from profile_service.domain.caller import Caller
from profile_service.domain.validation import (
    DEFAULT_PURGE_BATCH,
    check_fields,
    check_owner_id,
    check_owner_ids,
    check_purge,
    check_update_mask,
)
from profile_service.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
)
from profile_service.runtime import metrics
from profile_service.storage import db, repository
from profile_service.storage.repository import Row

T = TypeVar("T")


class Store(Protocol):
    """The database as the use cases see it."""

    async def run(self, query_for: Callable[[float], db.Query[T]], deadline: float | None) -> T:
        """Run the query made for the call's commit_by (seconds since the epoch) within the
        call's budget; raise a ServiceError if the database fails it."""
        ...


class ProfileService:
    """The use cases, one per RPC, each one statement on `store`."""

    def __init__(self, store: Store, *, min_retention_days: int) -> None:
        self._store = store
        self._min_retention_days = min_retention_days
        self._run = store.run

    async def get(self, caller: Caller, owner_id: str, deadline: float | None) -> Row:
        """A user's own active profile, or (service_role) anyone's, deleted ones included."""
        query = repository.get(caller, self._owner_named(caller, owner_id))
        return _found(await self._run(lambda _: query, deadline))

    def _owner_named(self, caller: Caller, owner_id: str) -> str:
        """The owner a call acts on: a user's own (naming anyone else's is PermissionDenied);
        for service_role, the one it names (required)."""
        _raise_if_invalid(check_owner_id(owner_id, "owner_id"))
        if caller.is_user:
            return _own_owner_id(caller, owner_id)
        if not owner_id:
            raise InvalidArgument([FieldViolation("owner_id", "is required for service_role")])
        return owner_id

    async def upsert(
        self,
        caller: Caller,
        owner_id: str,
        values: Mapping[str, Any],
        mask: frozenset[str],
        deadline: float | None,
        *,
        etag: str = "",
    ) -> Row:
        """Create or update the caller's own profile (users only); with `etag`, only if the
        profile has it (else Aborted, nothing written)."""
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
                lambda commit_by: repository.upsert(caller, changes, mask, etag, commit_by),
                deadline,
            )
        )

    async def soft_delete(
        self, caller: Caller, owner_id: str, deadline: float | None, *, etag: str = ""
    ) -> Row:
        """Soft-delete the caller's own active profile (users only); with `etag`, only if the
        profile has it (else Aborted, nothing written)."""
        _require_user(caller)
        _raise_if_invalid(check_owner_id(owner_id, "owner_id"))
        _own_owner_id(caller, owner_id)
        return _found(
            await self._run(
                lambda commit_by: repository.soft_delete(caller, etag, commit_by), deadline
            )
        )

    async def batch_get(
        self, caller: Caller, owner_ids: list[str], deadline: float | None
    ) -> list[Row]:
        """The profiles of `owner_ids`, in their order (duplicates repeated), soft-deleted ones
        included; service_role only. All or nothing: any absent is NotFound, naming them."""
        if caller.role != "service_role":
            raise PermissionDenied(
                "BatchGetProfiles is for service_role only", Reason.ROLE_NOT_ALLOWED
            )
        _raise_if_invalid(check_owner_ids(owner_ids))
        wanted = [owner.lower() for owner in owner_ids]
        distinct = list(dict.fromkeys(wanted))
        rows = await self._run(lambda _: repository.batch_get(caller, distinct), deadline)
        found = {row["owner_id"]: row for row in rows}
        missing = [owner for owner in distinct if owner not in found]
        if missing:
            raise NotFound(
                f"{len(missing)} of the profiles asked for do not exist",
                Reason.PROFILE_NOT_FOUND,
                missing,
            )
        return [found[owner] for owner in wanted]

    async def undelete(
        self, caller: Caller, owner_id: str, deadline: float | None, *, etag: str = ""
    ) -> Row:
        """Make a soft-deleted, not yet purged profile active again with all its data: a
        user's own, or (service_role) anyone's; with `etag`, only if the profile has it."""
        owner_id = self._owner_named(caller, owner_id)
        return _found(
            await self._run(
                lambda commit_by: repository.undelete(caller, owner_id, etag, commit_by),
                deadline,
            )
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
            raise PermissionDenied("Purge is for service_role only", Reason.ROLE_NOT_ALLOWED)
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


def _require_user(caller: Caller) -> None:
    if not caller.is_user:
        raise PermissionDenied(
            "only a signed-in user may change its profile", Reason.ROLE_NOT_ALLOWED
        )


def _own_owner_id(caller: Caller, owner_id: str) -> str:
    """The caller's own id; naming anyone else's is PermissionDenied."""
    assert caller.sub is not None  # guaranteed for role authenticated by auth
    if owner_id and owner_id.lower() != caller.sub.lower():
        raise PermissionDenied("a user may only name its own owner_id", Reason.NOT_OWN_PROFILE)
    return caller.sub


def _raise_if_invalid(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _found(row: Row | None) -> Row:
    if row is None:
        raise NotFound("profile not found", Reason.PROFILE_NOT_FOUND)
    return row
