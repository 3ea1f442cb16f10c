"""The use cases' rules with the database faked (service.Store): who may call what, the owner
rules, validation before any query, the purge loop. No database, network or server."""

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from profile_service.domain.caller import Caller
from profile_service.domain.service import ProfileService
from profile_service.domain.validation import WRITABLE_FIELDS
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
from profile_service.storage.store import ProfileStore

EVERYTHING = frozenset(WRITABLE_FIELDS)


class FakeStore:
    """Answers each query with the next of `answers` (None once they run out); keeps them."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.queries: list[db.Query[Any]] = []

    async def run(self, query_for: Callable[[float], db.Query[Any]], deadline: float | None) -> Any:
        self.queries.append(query_for(time.time() + 5))
        return self.answers.pop(0) if self.answers else None


def _user(sub: str | None = None) -> Caller:
    sub = sub or str(uuid.uuid4())
    return Caller("authenticated", sub, json.dumps({"sub": sub}), time.time() + 60)


SERVICE = Caller("service_role", None, "{}", time.time() + 60)


def _service(store: FakeStore) -> ProfileService:
    return ProfileService(store, min_retention_days=30)


def _purge_args(query: db.Query[Any]) -> tuple[str | None, ...]:
    """A purge batch's retention, batch size and dry run, as asked."""
    named = query.named()
    return named["retention_days"], named["limit"], named["dry_run"]


def _fails(call: Any, error: type[ServiceError]) -> ServiceError:
    with pytest.raises(error) as info:
        asyncio.run(call)
    return info.value


def test_a_user_reads_only_its_own_profile() -> None:
    store = FakeStore({"age": 30})
    me = _user()
    assert asyncio.run(_service(store).get(me, "", None)) == {"age": 30}
    assert store.queries[0].named()["owner_id"] == me.sub  # its own id, though it named none
    other = str(uuid.uuid4())
    error = _fails(_service(store).get(me, other, None), PermissionDenied)
    assert error.reason == "NOT_OWN_PROFILE"
    assert len(store.queries) == 1  # refused before any query


def test_service_role_must_name_an_owner_and_may_not_write() -> None:
    store = FakeStore()
    error = _fails(_service(store).get(SERVICE, "", None), InvalidArgument)
    assert [v.field for v in error.violations] == ["owner_id"]  # type: ignore[attr-defined]
    error = _fails(_service(store).upsert(SERVICE, "", {}, EVERYTHING, None), PermissionDenied)
    assert error.reason == "ROLE_NOT_ALLOWED"
    error = _fails(_service(store).soft_delete(SERVICE, "", None), PermissionDenied)
    assert store.queries == []


def test_bad_values_are_refused_before_any_query() -> None:
    store = FakeStore()
    values = {"age": 3, "sex": "x" * 33}
    error = _fails(_service(store).upsert(_user(), "", values, EVERYTHING, None), InvalidArgument)
    fields = {v.field for v in error.violations}  # type: ignore[attr-defined]
    assert fields == {"profile.age", "profile.sex"}
    assert store.queries == []


def test_an_absent_profile_is_not_found() -> None:
    error = _fails(_service(FakeStore(None)).get(_user(), "", None), NotFound)
    assert error.reason == "PROFILE_NOT_FOUND"


def test_only_service_role_purges() -> None:
    store = FakeStore()
    _fails(_service(store).purge(_user(), 0, False, 0, None), PermissionDenied)
    _fails(_service(store).purge(SERVICE, 29, False, 0, None), InvalidArgument)
    assert store.queries == []


def test_purge_goes_on_until_a_batch_finds_nothing() -> None:
    store = FakeStore(2, 2, 1, 0)
    assert asyncio.run(_service(store).purge(SERVICE, 0, False, 2, None)) == 5
    assert len(store.queries) == 4
    # The configured minimum, the batch size, and no dry run, in every batch.
    assert {_purge_args(q) for q in store.queries} == {("30", "2", "false")}


def test_a_dry_run_counts_once_and_a_caller_gone_stops_the_loop() -> None:
    store = FakeStore(7)
    assert asyncio.run(_service(store).purge(SERVICE, 45, True, 0, None)) == 7
    assert len(store.queries) == 1 and _purge_args(store.queries[0]) == ("45", "1000", "true")
    store = FakeStore(1000, 1000, 1000)
    purge = _service(store).purge(SERVICE, 0, False, 0, None, should_continue=lambda: False)
    assert asyncio.run(purge) == 1000
    assert len(store.queries) == 1


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
