"""A multi-host DATABASE_URL (libpq tries the hosts in turn), as an operator's failover setup
gives it: a first host that hangs must not keep the service, or its health, from the next."""

import socket
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests import replication
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import error_reason, rpc_error, server_env, serving, user, wait_for
from tests.e2e.probes import SERVING, health


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers: a host that froze,
    or a half-dead one behind a load balancer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def _hanging_host_first(url: str, port: int) -> str:
    params = conninfo_to_dict(url)
    host, real_port = params.pop("host", None) or "127.0.0.1", params.pop("port", None) or "5432"
    return make_conninfo(
        **params,
        host=f"127.0.0.1,{host}",
        port=f"{port},{real_port}",
        target_session_attrs="read-write",
        connect_timeout="2",  # per host, as docs/operations.md §13 advises
    )


def test_a_first_host_that_hangs_leaves_the_service_serving_and_ready(
    test_db: ThrowawayDatabase, hanging_port: int
) -> None:
    url = _hanging_host_first(test_db.service_url, hanging_port)
    with serving(server_env(url, DB_POOL_SIZE="2")) as (_, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        md = user(uuid.uuid4())
        saved = stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=md, timeout=5)
        assert saved.age == 30
        # The probe reaches the second host too (it used to give up on the first: NOT_SERVING
        # for good, pods never ready).
        assert wait_for(lambda: health(channel) == SERVING, timeout=20)
        assert stub.Get(pb.GetRequest(), metadata=md, timeout=5).age == 30


def _code(stub: pb_grpc.ProfileServiceStub, md: object, age: int) -> str:
    """How an Upsert of `age` ends: OK, or its status and reason's message."""
    try:
        stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=age)), metadata=md, timeout=2)
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"
    return "OK"


def test_after_a_restart_of_the_primary_writes_go_back_to_it_from_the_standby() -> None:
    """Without target_session_attrs, libpq takes the first host that answers: while the
    primary is down, the standby (read-only). Once the primary is back, the service must go
    back to it: pooled connections would otherwise stay on the standby for their lifetime."""
    with replication.cluster() as cluster:
        url = cluster.service_url_for(cluster.primary, cluster.standby)
        with serving(server_env(url, DB_POOL_SIZE="4")) as (_, channel):
            stub = pb_grpc.ProfileServiceStub(channel)
            md = user(uuid.uuid4())
            assert _code(stub, md, 30) == "OK"
            cluster.kill(cluster.primary)
            # On the standby: reads go on (the row replicated), writes are refused.
            assert wait_for(lambda: "read-only" in _code(stub, md, 31))
            assert stub.Get(pb.GetRequest(), metadata=md, timeout=2).age == 30
            cluster.start_node(cluster.primary)
            restarted = time.monotonic()
            assert wait_for(lambda: _code(stub, md, 32) == "OK", timeout=15)
            print(f"writes back {time.monotonic() - restarted:.2f} s after the primary")
            # And every call: no connection left behind on the standby.
            assert all(_code(stub, md, 33 + i) == "OK" for i in range(20))


def test_a_write_the_synchronous_standby_never_confirmed_is_not_called_unwritten() -> None:
    """Under synchronous replication PostgreSQL commits locally, then waits for the standby;
    commit_by is checked before. A write given up during that wait is committed all the same,
    so its answer must not say "nothing was written" (UNAVAILABLE's promise)."""
    with replication.cluster(synchronous=True) as cluster:
        url = cluster.service_url_for(cluster.primary)
        with serving(server_env(url, DB_POOL_SIZE="2")) as (_, channel):
            stub = pb_grpc.ProfileServiceStub(channel)
            md = user(uuid.uuid4())
            assert _code(stub, md, 30) == "OK"
            cluster.wal_stream.freeze()  # the standby hears nothing, confirms nothing
            request = pb.UpsertRequest(profile=pb.Profile(age=31))
            error = rpc_error(lambda: stub.Upsert(request, metadata=md, timeout=1))
            reason, _ = error_reason(error)
            assert (error.code(), reason) == (grpc.StatusCode.UNAVAILABLE, "WRITE_OUTCOME_UNKNOWN")
            assert "read it back" in (error.details() or "")
            # Reads do not wait for the standby: the service still serves them meanwhile
            # (the write itself is visible once its wait ends: the service's cancel, or the
            # standby's confirmation).
            assert stub.Get(pb.GetRequest(), metadata=md, timeout=2).age in (30, 31)
            cluster.wal_stream.thaw()
            # It was written indeed: the answer was honest.
            assert wait_for(
                lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=2).age == 31, timeout=10
            )


def test_a_promoted_standby_takes_writes_within_a_probe_interval_without_a_restart() -> None:
    """The primary crashes; the standby is promoted a while later. Writes come back by
    themselves, soon after the promotion (the probe runs every 0.25 s while the database is
    down), and nothing answers INTERNAL meanwhile."""
    with replication.cluster() as cluster:
        url = cluster.service_url_for(
            cluster.primary, cluster.standby, target_session_attrs="read-write"
        )
        with serving(server_env(url, DB_POOL_SIZE="4")) as (_, channel):
            stub = pb_grpc.ProfileServiceStub(channel)
            md = user(uuid.uuid4())
            assert _code(stub, md, 30) == "OK"
            cluster.kill(cluster.primary)
            assert wait_for(lambda: _code(stub, md, 31).startswith("UNAVAILABLE"))
            outages = {_code(stub, md, 31) for _ in range(10)}
            assert all(o.startswith("UNAVAILABLE") for o in outages), outages
            cluster.promote(cluster.standby)
            promoted = time.monotonic()
            assert wait_for(lambda: _code(stub, md, 32) == "OK", timeout=10)
            took = time.monotonic() - promoted
            print(f"writes back {took:.2f} s after the promotion; meanwhile {sorted(outages)}")
            assert took < 0.6  # the probe ran once a second while down: up to 1 s
            assert stub.Get(pb.GetRequest(), metadata=md, timeout=2).age == 32
