"""Exactly one round trip to PostgreSQL per Get, Upsert and SoftDelete, proven by libpq's trace.

A round trip is a Sync message from the client (the server answers once per Sync); the simple
query protocol ("Query" messages) would re-plan the RLS query on every call, so none may appear.
"""

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg.pq import Trace
from psycopg_pool import ConnectionPool

from profile_service import db
from profile_service.auth import Caller
from profile_service.service import ProfileService
from profile_service.validation import WRITABLE_FIELDS
from tests.conftest import ThrowawayDatabase


@pytest.fixture
def service_and_trace(
    test_db: ThrowawayDatabase, admin: Any
) -> Iterator[tuple[ProfileService, Callable[[], list[str]]]]:
    pool: ConnectionPool = db.create_pool(test_db.service_url, size=1, prepare=True)
    pool.open(wait=True)
    with tempfile.TemporaryFile(mode="w+") as trace_file:
        with pool.connection() as conn:  # the only connection: every call below uses it
            conn.pgconn.trace(trace_file.fileno())
            conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        offset = 0

        def messages_since_last_call() -> list[str]:
            nonlocal offset
            trace_file.seek(offset)
            text = trace_file.read()
            offset = trace_file.tell()
            return [line.split("\t")[2] for line in text.splitlines() if line.startswith("F\t")]

        try:
            service = ProfileService(pool, min_retention_days=30, db_timeout_seconds=5)
            yield service, messages_since_last_call
        finally:
            pool.close()


def _user() -> Caller:
    sub = str(uuid.uuid4())
    claims = {"sub": sub, "role": "authenticated", "exp": int(time.time()) + 60}
    return Caller("authenticated", sub, json.dumps(claims), time.time() + 60)


def test_get_upsert_and_soft_delete_take_one_round_trip_each(
    service_and_trace: tuple[ProfileService, Callable[[], list[str]]],
) -> None:
    service, messages = service_and_trace
    caller = _user()
    everything = frozenset(WRITABLE_FIELDS)
    for round_ in range(2):  # the second time, statements are prepared already
        calls = {
            "Upsert": lambda: service.upsert(caller, "", {"age": 30}, everything, None),
            "Get": lambda: service.get(caller, "", None),
            "SoftDelete": lambda: service.soft_delete(caller, "", None),
        }
        for name, call in calls.items():
            messages()
            call()
            sent = messages()
            assert sent.count("Sync") == 1, (round_, name, sent)
            assert "Query" not in sent, (round_, name, sent)
            if round_ == 1:
                assert "Parse" not in sent, (name, sent)  # prepared: Bind/Execute only
