"""No write commits after its caller was told it failed (issue "Stall-proof", item 3).

The database backend serving a write is frozen (SIGSTOP) with the statement in its socket
buffer; the caller is answered UNAVAILABLE; a newer write of the same profile succeeds on a
fresh connection; then the frozen backend thaws and runs the old statement. It must not
commit over the acknowledged newer write.
"""

import os
import signal
import uuid

import grpc
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import rpc_error, server_env, serving, user, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="signals PostgreSQL's processes")


# This test's server names its connections, apart from the other servers on the database.
_APPLICATION = "late-writes-test"


def _pool_backends(admin: psycopg.Connection) -> list[int]:
    """The test server's pooled connections (its health probe names itself apart)."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = %s",
        (_APPLICATION,),
    ).fetchall()
    return [pid for (pid,) in rows]


def test_a_write_given_up_on_never_lands_after_a_newer_one(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    # One pooled connection: the write below can only go to the backend we freeze.
    url = make_conninfo(test_db.service_url, application_name=_APPLICATION)
    with serving(server_env(url, DB_POOL_SIZE="1")) as (_, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        for attempt in range(10):
            sub = uuid.uuid4()
            md = user(sub)
            stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=md, timeout=5)
            assert wait_for(lambda: len(_pool_backends(admin)) == 1)
            (frozen,) = _pool_backends(admin)
            os.kill(frozen, signal.SIGSTOP)
            try:
                old = pb.UpsertRequest(profile=pb.Profile(age=40))
                error = rpc_error(lambda r=old, m=md: stub.Upsert(r, metadata=m, timeout=1))
                assert error.code() == grpc.StatusCode.UNAVAILABLE, attempt
                # The pool replaced the abandoned connection: the newer write goes through.
                new = pb.UpsertRequest(profile=pb.Profile(age=50))
                assert stub.Upsert(new, metadata=md, timeout=5).age == 50
            finally:
                os.kill(frozen, signal.SIGCONT)
            # The thawed backend runs (or drops) the old statement, then ends: the client left.
            assert wait_for(lambda pid=frozen: pid not in _pool_backends(admin))
            age = admin.execute(
                "SELECT age FROM profile.profiles WHERE owner_id = %s", (sub,)
            ).fetchone()
            assert age == (50,), attempt
