"""Which status a call that ran out of time gets (store.py and liveness.py), on a real pool: the
server's own verdict, without a client's deadline racing it."""

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from profile_service.domain import deadlines
from profile_service.domain.caller import Caller
from profile_service.domain.service import ProfileService
from profile_service.domain.validation import WRITABLE_FIELDS
from profile_service.errors import OutOfTime, ServiceError, Unavailable
from profile_service.storage import repository
from profile_service.storage.liveness import SHORT_WINDOW_FACTOR, DatabaseLiveness
from profile_service.storage.repository import ProfileRepository
from profile_service.storage.store import ProfileStore
from tests.conftest import ThrowawayDatabase


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def _caller() -> Caller:
    sub = str(uuid.uuid4())
    claims = {"sub": sub, "role": "authenticated", "exp": int(time.time()) + 60}
    return Caller("authenticated", sub, json.dumps(claims), time.time() + 60)


async def _failure(call: "asyncio.Future[object] | object") -> ServiceError:
    try:
        await call  # type: ignore[misc]
    except ServiceError as error:
        return error
    raise AssertionError("the call succeeded")


def test_a_lock_wait_is_deadline_exceeded_only_when_the_deadline_was_too_short(
    test_db: ThrowawayDatabase, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> tuple[ServiceError, ServiceError, float]:
        pool = repository.create_pool(test_db.service_url, size=2)
        await pool.open(wait=True)
        liveness = DatabaseLiveness(1.0)
        service = ProfileService(
            ProfileRepository(ProfileStore(pool, db_timeout_seconds=5, liveness=liveness)),
            min_retention_days=30,
        )
        caller = _caller()
        fields = frozenset(WRITABLE_FIELDS)
        try:
            await service.upsert(caller, "", {"age": 30}, fields, None)
            for _ in range(20):  # the round trips liveness learns from
                await service.get(caller, "", None)
            round_trip = liveness.typical_round_trip
            assert round_trip is not None
            # Half the window that counts as too short, and more than no time at all.
            window = max(SHORT_WINDOW_FACTOR / 2 * round_trip, 2 * deadlines.MIN_WINDOW)
            assert liveness.too_short(window)
            with psycopg.connect(test_db.admin_url) as locker:
                locker.execute(
                    "SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (caller.sub,)
                )
                # The deadline keeps a tenth back for the answer (deadlines.py).
                deadline = time.monotonic() + window / (1 - deadlines.RESERVE_FRACTION)
                short = service.upsert(caller, "", {"age": 31}, fields, deadline)
                too_short = await _failure(short)
                # A second: plenty of round trips, so the lock is the database's doing.
                long = service.upsert(caller, "", {"age": 31}, fields, time.monotonic() + 1.0)
                slow = await _failure(long)
            return too_short, slow, round_trip
        finally:
            await pool.close()

    too_short, slow, round_trip = loop.run_until_complete(scenario())
    print(f"round trip {round_trip * 1000:.2f} ms")
    assert isinstance(too_short, OutOfTime), too_short
    assert too_short.reason == "DEADLINE_TOO_SHORT"
    assert "too little" in str(too_short)
    assert isinstance(slow, Unavailable), slow
    assert slow.reason == "DATABASE_TIMEOUT"
