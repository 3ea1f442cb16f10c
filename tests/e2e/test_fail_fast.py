"""Answers that depend on what the database has been doing (liveness.py, contract §4):

- a deadline too short for the database is the caller's: DEADLINE_EXCEEDED, never UNAVAILABLE;
- a database gone silent is answered UNAVAILABLE at once, not after each call's deadline;
- a database merely slow (lock waits) is not taken for a silent one.
"""

import collections
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psycopg

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import lock_waiters, rpc_error, serving_through_proxy, user, wait_for
from tests.e2e.probes import SERVING, health


def _saved_user(stub: pb_grpc.ProfileServiceStub, age: int = 30) -> uuid.UUID:
    sub = uuid.uuid4()
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=age)), metadata=user(sub), timeout=5)
    return sub


def _code(method: Callable[..., object], request: object, **kwargs: Any) -> grpc.StatusCode:
    """The status `method(request, **kwargs)` ends with."""
    try:
        method(request, **kwargs)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_deadlines_shorter_than_the_database_s_round_trips_are_deadline_exceeded(
    test_db: ThrowawayDatabase,
) -> None:
    with serving_through_proxy(test_db.service_url) as (proxy, _, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        subs = [_saved_user(stub) for _ in range(4)]
        proxy.answer_delay = 0.001  # the database answers in 1-2 ms, as from another zone
        for sub in subs * 5:  # round trips the service has seen
            stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5)
        codes: collections.Counter[grpc.StatusCode] = collections.Counter()
        for deadline_ms in (1, 2, 3, 5):
            for i in range(30):
                md = user(subs[i % len(subs)])
                timeout = deadline_ms / 1000
                codes[_code(stub.Get, pb.GetRequest(), metadata=md, timeout=timeout)] += 1
                upsert = pb.UpsertRequest(profile=pb.Profile(age=31 + i % 5))
                codes[_code(stub.Upsert, upsert, metadata=md, timeout=timeout)] += 1
    print("codes:", dict(codes))
    # Each is answered OK or DEADLINE_EXCEEDED: the database was fine, the deadlines short.
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, codes
    assert codes[grpc.StatusCode.DEADLINE_EXCEEDED] > 0  # some were too short indeed


def test_a_silent_database_is_answered_at_once_then_served_again_when_it_thaws(
    test_db: ThrowawayDatabase,
) -> None:
    with serving_through_proxy(test_db.service_url) as (proxy, _, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        md = user(_saved_user(stub))
        proxy.freeze()
        frozen_at = time.monotonic()
        # A call in flight when the database froze waits out its budget: nothing told it yet.
        first = threading.Thread(
            target=_code, args=(stub.Get, pb.GetRequest()), kwargs={"metadata": md, "timeout": 2}
        )
        first.start()
        time.sleep(1.5)
        answered_in = []
        for _ in range(10):
            started = time.monotonic()
            error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=2))
            answered_in.append(time.monotonic() - started)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "not answering" in (error.details() or "")
        print(f"answered in at most {max(answered_in) * 1000:.0f} ms, 1.5 s into the freeze")
        # At once, not after most of the 2 s deadline (1.8 s before liveness.py).
        assert max(answered_in) < 0.25
        first.join()
        assert time.monotonic() - frozen_at < 3  # and the whole thing took no deadlines
        proxy.thaw()
        thawed = time.monotonic()
        assert wait_for(
            lambda: _code(stub.Get, pb.GetRequest(), metadata=md, timeout=2) == grpc.StatusCode.OK
        )
        print(f"served again {(time.monotonic() - thawed) * 1000:.0f} ms after the thaw")
        assert time.monotonic() - thawed < 1.0
        assert wait_for(lambda: health(channel) == SERVING)


def test_row_locks_on_half_the_users_do_not_make_the_database_look_silent(
    stub: pb_grpc.ProfileServiceStub, test_db: ThrowawayDatabase
) -> None:
    locked = [_saved_user(stub) for _ in range(4)]
    free = [_saved_user(stub) for _ in range(4)]
    codes: dict[str, collections.Counter[grpc.StatusCode]] = {
        "locked": collections.Counter(),
        "free": collections.Counter(),
    }

    def write(sub: uuid.UUID, kind: str, timeout: float) -> None:
        request = pb.UpsertRequest(profile=pb.Profile(age=40))
        codes[kind][_code(stub.Upsert, request, metadata=user(sub), timeout=timeout)] += 1

    with (
        psycopg.connect(test_db.admin_url, autocommit=True) as watcher,
        psycopg.connect(test_db.admin_url) as locker,
    ):
        locker.execute(
            "SELECT 1 FROM profile.profiles WHERE owner_id = ANY(%s) FOR UPDATE", (locked,)
        )
        # The locked users' writes wait 2.7 s each, longer than DB_SILENT_SECONDS (1 s).
        waiters = [threading.Thread(target=write, args=(s, "locked", 3.0)) for s in locked]
        for thread in waiters:
            thread.start()
        assert wait_for(lambda: lock_waiters(watcher) == len(locked))
        # A while with no answer to any API call: only the health probe's answers tell a
        # database that makes callers wait from one that went silent.
        time.sleep(1.3)
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:  # the other half, one call at a time
            for sub in free:
                write(sub, "free", 2.0)
        for thread in waiters:
            thread.join()
    print("codes:", {k: dict(v) for k, v in codes.items()})
    assert set(codes["free"]) == {grpc.StatusCode.OK}
    assert codes["locked"] == {grpc.StatusCode.UNAVAILABLE: len(locked)}
    assert stub.Get(pb.GetRequest(), metadata=user(locked[0]), timeout=5).age == 30
