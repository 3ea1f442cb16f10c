"""The use cases' rules with the profiles faked (service.Profiles): who may call what, the
owner rules, validation before anything is asked, the purge loop. No database, network or
server."""

import asyncio
import inspect
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import grpc
import pytest

from profile_service.domain.caller import Caller
from profile_service.domain.fields import Row
from profile_service.domain.service import ProfileService
from profile_service.domain.validation import DEFAULT_PURGE_BATCH, WRITABLE_FIELDS
from profile_service.errors import (
    InvalidArgument,
    NotFound,
    OutOfTime,
    PermissionDenied,
    ServiceError,
    Unavailable,
)
from profile_service.storage import db, repository
from profile_service.storage.liveness import DatabaseLiveness
from profile_service.storage.repository import ProfileRepository
from profile_service.storage.store import ProfileStore

EVERYTHING = frozenset(WRITABLE_FIELDS)


class FakeProfiles:
    """Profiles in memory (service.Profiles), by owner, without row-level security: the rules
    under test are the service's own. Keeps each ask as (what, its arguments by name); a purge
    batch deletes the next of `purge_counts` (0 once they run out)."""

    def __init__(self, *rows: Row, purge_counts: tuple[int, ...] = ()) -> None:
        self.rows = {row["owner_id"]: row for row in rows}
        self.purge_counts = list(purge_counts)
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def get(self, caller: Caller, owner_id: str, deadline: float | None) -> Row | None:
        self.asked.append(("get", {"owner_id": owner_id}))
        return self.rows.get(owner_id)

    async def batch_get(
        self, caller: Caller, owner_ids: list[str], deadline: float | None
    ) -> list[Row]:
        self.asked.append(("batch_get", {"owner_ids": owner_ids}))
        return [self.rows[owner] for owner in owner_ids if owner in self.rows]

    async def upsert(
        self,
        caller: Caller,
        changes: Mapping[str, Any],
        mask: frozenset[str],
        etag: str,
        deadline: float | None,
    ) -> Row | None:
        self.asked.append(("upsert", {"owner_id": caller.sub, "changes": dict(changes)}))
        row = self.rows.setdefault(str(caller.sub), {"owner_id": caller.sub})
        row.update({name: changes.get(name) for name in mask})
        return row

    async def soft_delete(self, caller: Caller, etag: str, deadline: float | None) -> Row | None:
        self.asked.append(("soft_delete", {"owner_id": caller.sub}))
        return self.rows.get(str(caller.sub))

    async def undelete(
        self, caller: Caller, owner_id: str, etag: str, deadline: float | None
    ) -> Row | None:
        self.asked.append(("undelete", {"owner_id": owner_id}))
        return self.rows.get(owner_id)

    async def purge_batch(
        self, caller: Caller, retention_days: int, limit: int, dry_run: bool, deadline: float | None
    ) -> int:
        arguments = {"retention_days": retention_days, "limit": limit, "dry_run": dry_run}
        self.asked.append(("purge_batch", arguments))
        return self.purge_counts.pop(0) if self.purge_counts else 0


def _user(sub: str | None = None) -> Caller:
    sub = sub or str(uuid.uuid4())
    return Caller("authenticated", sub, json.dumps({"sub": sub}), time.time() + 60)


SERVICE = Caller("service_role", None, "{}", time.time() + 60)


def _service(profiles: FakeProfiles) -> ProfileService:
    return ProfileService(profiles, min_retention_days=30)


def _fails(call: Any, error: type[ServiceError]) -> ServiceError:
    with pytest.raises(error) as info:
        asyncio.run(call)
    return info.value


def test_the_fake_is_asked_as_the_repository_is() -> None:
    """Each method of the fake is one of ProfileRepository's, with the same arguments, so the
    rules tested here hold for the service as it runs. (A new RPC needs one here only for a
    rule test of its own.)"""
    faked = [name for name in vars(FakeProfiles) if not name.startswith("_")]
    assert len(faked) >= 6
    for name in faked:
        real = inspect.signature(getattr(ProfileRepository, name))
        assert inspect.signature(getattr(FakeProfiles, name)) == real, name


def test_a_user_reads_only_its_own_profile() -> None:
    me = _user()
    profiles = FakeProfiles({"owner_id": me.sub, "age": 30})
    assert asyncio.run(_service(profiles).get(me, "", None)) == {"owner_id": me.sub, "age": 30}
    assert profiles.asked == [("get", {"owner_id": me.sub})]  # its own, though it named none
    other = str(uuid.uuid4())
    error = _fails(_service(profiles).get(me, other, None), PermissionDenied)
    assert error.reason == "NOT_OWN_PROFILE"
    assert len(profiles.asked) == 1  # refused before asking


def test_service_role_must_name_an_owner_and_may_not_write() -> None:
    profiles = FakeProfiles()
    error = _fails(_service(profiles).get(SERVICE, "", None), InvalidArgument)
    assert [v.field for v in error.violations] == ["owner_id"]  # type: ignore[attr-defined]
    error = _fails(_service(profiles).upsert(SERVICE, "", {}, EVERYTHING, None), PermissionDenied)
    assert error.reason == "ROLE_NOT_ALLOWED"
    error = _fails(_service(profiles).soft_delete(SERVICE, "", None), PermissionDenied)
    assert profiles.asked == []


def test_bad_values_are_refused_before_anything_is_written() -> None:
    profiles = FakeProfiles()
    values = {"age": 3, "sex": "x" * 33}
    call = _service(profiles).upsert(_user(), "", values, EVERYTHING, None)
    error = _fails(call, InvalidArgument)
    fields = {v.field for v in error.violations}  # type: ignore[attr-defined]
    assert fields == {"profile.age", "profile.sex"}
    assert profiles.asked == [] and profiles.rows == {}


def test_an_upsert_writes_only_the_fields_of_its_mask() -> None:
    me = _user()
    profiles = FakeProfiles({"owner_id": me.sub, "age": 30, "sex": "female"})
    call = _service(profiles).upsert(me, "", {"age": 31, "sex": "male"}, frozenset({"age"}), None)
    assert asyncio.run(call) == {"owner_id": me.sub, "age": 31, "sex": "female"}
    assert profiles.asked == [("upsert", {"owner_id": me.sub, "changes": {"age": 31}})]


def test_an_absent_profile_is_not_found() -> None:
    error = _fails(_service(FakeProfiles()).get(_user(), "", None), NotFound)
    assert error.reason == "PROFILE_NOT_FOUND"


def test_a_batch_is_all_or_nothing_in_the_order_asked() -> None:
    first, second, absent = (str(uuid.uuid4()) for _ in range(3))
    profiles = FakeProfiles({"owner_id": first}, {"owner_id": second})
    rows = asyncio.run(_service(profiles).batch_get(SERVICE, [second, first, second], None))
    assert [row["owner_id"] for row in rows] == [second, first, second]
    assert profiles.asked == [("batch_get", {"owner_ids": [second, first]})]  # once each
    error = _fails(_service(profiles).batch_get(SERVICE, [first, absent], None), NotFound)
    assert error.reason == "PROFILE_NOT_FOUND"


def test_only_service_role_purges() -> None:
    profiles = FakeProfiles()
    _fails(_service(profiles).purge(_user(), 0, False, 0, None), PermissionDenied)
    _fails(_service(profiles).purge(SERVICE, 29, False, 0, None), InvalidArgument)
    assert profiles.asked == []


def test_purge_goes_on_until_a_batch_finds_nothing() -> None:
    profiles = FakeProfiles(purge_counts=(2, 2, 1, 0))
    assert asyncio.run(_service(profiles).purge(SERVICE, 0, False, 2, None)) == 5
    # The configured minimum, the batch size, and no dry run, in every batch.
    batch = ("purge_batch", {"retention_days": 30, "limit": 2, "dry_run": False})
    assert profiles.asked == [batch] * 4


def test_a_dry_run_counts_once_and_a_caller_gone_stops_the_loop() -> None:
    profiles = FakeProfiles(purge_counts=(7,))
    assert asyncio.run(_service(profiles).purge(SERVICE, 45, True, 0, None)) == 7
    assert profiles.asked == [
        ("purge_batch", {"retention_days": 45, "limit": DEFAULT_PURGE_BATCH, "dry_run": True})
    ]
    profiles = FakeProfiles(purge_counts=(1000, 1000, 1000))
    purge = _service(profiles).purge(SERVICE, 0, False, 0, None, should_continue=lambda: False)
    assert asyncio.run(purge) == 1000
    assert len(profiles.asked) == 1


def test_the_store_answers_before_any_connection_when_it_cannot_help() -> None:
    """Contract section 4: out of time is DEADLINE_EXCEEDED (never UNAVAILABLE); a database
    known to be unreachable is UNAVAILABLE at once. Neither asks the pool (None here)."""
    query = lambda _: db.Query(db.Statement("x", "SELECT 1"), (), lambda v: v)  # noqa: E731
    store = ProfileStore(None, db_timeout_seconds=5, liveness=DatabaseLiveness(1.0))  # type: ignore[arg-type]
    error = _fails(store.run(query, time.monotonic() - 1), OutOfTime)
    assert (error.code, error.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "NO_TIME_LEFT")
    down = ProfileStore(
        None,
        db_timeout_seconds=5,
        liveness=DatabaseLiveness(1.0),
        database_refusal=lambda: Unavailable("database unreachable", "DATABASE_UNREACHABLE"),
    )  # type: ignore[arg-type]
    error = _fails(down.run(query, None), Unavailable)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNREACHABLE")


def test_every_statement_names_each_of_its_parameters() -> None:
    for statement in repository.STATEMENTS:
        placeholders = sorted({int(n) for n in re.findall(r"\$(\d+)", statement.sql)})
        assert placeholders == list(range(1, len(statement.parameters) + 1)), statement.name
