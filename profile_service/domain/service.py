"""The use cases. Each decides who may call it, then runs one RLS-scoped transaction.

The profiles are behind `Profiles` (storage's ProfileRepository, or a fake in the unit
tests); errors are the ServiceErrors of errors.py, which also says how they are sent.
"""

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from profile_service.domain.caller import Caller
from profile_service.domain.fields import Row
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


class Profiles(Protocol):
    """The profiles as the use cases ask for them, each ask one RLS-scoped transaction run as
    `caller` within `deadline` (time.monotonic(); None: none). A row RLS hides, or that an
    etag (empty: any) does not match, is None; a database failure raises a ServiceError."""

    async def get(self, caller: Caller, owner_id: str, deadline: float | None) -> Row | None:
        """`owner_id`'s profile."""
        ...

    async def batch_get(
        self, caller: Caller, owner_ids: list[str], deadline: float | None
    ) -> list[Row]:
        """The profiles of `owner_ids` that exist, in any order."""
        ...

    async def upsert(
        self,
        caller: Caller,
        changes: Mapping[str, Any],
        mask: frozenset[str],
        etag: str,
        deadline: float | None,
    ) -> Row | None:
        """Write the `mask` fields of the caller's profile (absent from `changes`: null)."""
        ...

    async def soft_delete(self, caller: Caller, etag: str, deadline: float | None) -> Row | None:
        """Soft-delete the caller's active profile."""
        ...

    async def undelete(
        self, caller: Caller, owner_id: str, etag: str, deadline: float | None
    ) -> Row | None:
        """Make `owner_id`'s soft-deleted profile active again."""
        ...

    async def purge_batch(
        self, caller: Caller, retention_days: int, limit: int, dry_run: bool, deadline: float | None
    ) -> int:
        """Delete up to `limit` profiles soft-deleted over `retention_days` ago; how many (with
        `dry_run`, how many there are, deleting none)."""
        ...


class ProfileService:
    """The use cases, one per RPC, each one ask of `profiles`."""

    def __init__(self, profiles: Profiles, *, min_retention_days: int) -> None:
        self._profiles = profiles
        self._min_retention_days = min_retention_days

    async def get(self, caller: Caller, owner_id: str, deadline: float | None) -> Row:
        """A user's own active profile, or (service_role) anyone's, deleted ones included."""
        owner_id = self._owner_named(caller, owner_id)
        return _found(await self._profiles.get(caller, owner_id, deadline))

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
        return _found(await self._profiles.upsert(caller, changes, mask, etag, deadline))

    async def soft_delete(
        self, caller: Caller, owner_id: str, deadline: float | None, *, etag: str = ""
    ) -> Row:
        """Soft-delete the caller's own active profile (users only); with `etag`, only if the
        profile has it (else Aborted, nothing written)."""
        _require_user(caller)
        _raise_if_invalid(check_owner_id(owner_id, "owner_id"))
        _own_owner_id(caller, owner_id)
        return _found(await self._profiles.soft_delete(caller, etag, deadline))

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
        rows = await self._profiles.batch_get(caller, distinct, deadline)
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
        return _found(await self._profiles.undelete(caller, owner_id, etag, deadline))

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
            return await self._profiles.purge_batch(caller, days, limit, True, deadline)
        total = 0
        # One transaction per batch keeps locks short. Stop only on an empty batch: a short one
        # may just mean a concurrent purge took some rows. A caller that cancelled (a CronJob
        # killed, a connection closed for its age) leaves the rest to the next run.
        while True:
            deleted = await self._profiles.purge_batch(caller, days, limit, False, deadline)
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
