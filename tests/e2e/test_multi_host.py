"""A multi-host DATABASE_URL (libpq tries the hosts in turn), as an operator's failover setup
gives it: a first host that hangs must not keep the service, or its health, from the next."""

import socket
import uuid
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import server_env, serving, user, wait_for
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
