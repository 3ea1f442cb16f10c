"""TLS and mTLS on the API port: certificates made here, rotated in place, refused when they
should be; health still answered in plaintext for the kubelet's probes."""

import os
import signal
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import grpc
import psycopg
import pytest

from devtools import h2_attacks
from profile_service.auth import tokens
from profile_service.client import TLS, ProfileClient, ServiceError
from profile_service.runtime import cli
from profile_service.transport import server
from profile_service.transport.unfinished import REASON, UNFINISHED_SECONDS
from profile_service.v1 import profile_service_pb2 as pb
from tests.certificates import Authority, Issued
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import (
    SECRET,
    lock_waiters,
    server_env,
    serving,
    serving_through_proxy,
    wait_for,
)
from tests.e2e.probes import GRPCURL, NOT_SERVING, SERVING, free_port, health
from tests.e2e.raw_h2 import call

Start = Callable[..., AbstractContextManager[server.RunningServer]]


class Files:
    """The paths a deployment mounts: certificate, key, client CA."""

    def __init__(self, root: Path) -> None:
        self.cert, self.key, self.client_ca = root / "tls.crt", root / "tls.key", root / "ca.crt"


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def start(test_db: ThrowawayDatabase, files: Files, admin: object) -> Start:
    """Start a server on `files` (mTLS when `mtls`)."""

    @contextmanager
    def run(*, mtls: bool = False) -> Iterator[server.RunningServer]:
        env = server_env(
            test_db.service_url,
            GRPC_TLS_CERT_FILE=str(files.cert),
            GRPC_TLS_KEY_FILE=str(files.key),
            GRPC_HEALTH_PORT="0",
            **({"GRPC_TLS_CLIENT_CA_FILE": str(files.client_ca)} if mtls else {}),
        )
        with serving(env) as (running, _):
            yield running

    return run


def _token() -> str:
    return tokens.mint(SECRET, role="authenticated", sub=str(uuid.uuid4()))


def _client(
    running: server.RunningServer, ca: Authority, me: Issued | None = None
) -> ProfileClient:
    tls = TLS(
        root_certificates=ca.cert,
        certificate_chain=me.cert if me else None,
        private_key=me.key if me else None,
        server_name="localhost",
    )
    return ProfileClient(f"127.0.0.1:{running.port}", token=_token(), tls=tls)


def _refused(client: ProfileClient) -> grpc.StatusCode:
    with client, pytest.raises(ServiceError) as info:
        client.upsert(pb.Profile(age=30), timeout=3)
    return info.value.code


def test_tls_serves_the_api_and_health_and_plaintext_is_refused(start: Start, files: Files) -> None:
    ca = Authority()
    ca.server().write(files.cert, files.key)
    with start() as running:
        with _client(running, ca) as client:
            assert client.upsert(pb.Profile(age=30)).age == 30
        channel_credentials = grpc.ssl_channel_credentials(ca.cert)
        options = [("grpc.ssl_target_name_override", "localhost")]
        target = f"127.0.0.1:{running.port}"
        with grpc.secure_channel(target, channel_credentials, options) as secure:
            assert health(secure) == SERVING
        # Reflection too, for grpcurl over TLS.
        ca_file = files.cert.parent / "ca.pem"
        ca_file.write_bytes(ca.cert)
        listed = subprocess.run(
            [GRPCURL, "-cacert", str(ca_file), "-servername", "localhost", target, "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert "profile.v1.ProfileService" in listed
        # Plaintext: the kubelet's probe on the health-only port; nothing on the TLS port.
        assert running.health_port is not None
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as plain:
            assert health(plain) == SERVING
            assert health(plain, "liveness") == SERVING
            stub_call = plain.unary_unary("/profile.v1.ProfileService/Get")
            with pytest.raises(grpc.RpcError) as info:
                stub_call(b"", timeout=3)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # health only
        with ProfileClient(target, token=_token()) as plaintext:
            with pytest.raises(ServiceError) as refused:
                plaintext.get(timeout=3)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_rotated_in_place_is_served_to_new_connections(
    start: Start, files: Files
) -> None:
    old_ca, new_ca = Authority("old CA"), Authority("new CA")
    old_ca.server().write(files.cert, files.key)
    with start() as running:
        with _client(running, old_ca) as client:
            assert client.upsert(pb.Profile(age=30)).age == 30

        # Half a rotation (a new certificate, the old key): the old pair stays in use.
        files.cert.write_bytes(new_ca.server().cert)
        with _client(running, old_ca) as client:
            assert client.upsert(pb.Profile(age=31)).age == 31

        new_ca.server().write(files.cert, files.key)
        with _client(running, new_ca) as client:
            assert client.upsert(pb.Profile(age=32)).age == 32
        assert _refused(_client(running, old_ca)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_valid_client_certificate(start: Start, files: Files) -> None:
    ca, stranger_ca = Authority(), Authority("someone else's CA")
    ca.server().write(files.cert, files.key)
    files.client_ca.write_bytes(ca.cert)
    with start(mtls=True) as running:
        with _client(running, ca, ca.client()) as client:
            assert client.upsert(pb.Profile(age=30)).age == 30
        assert _refused(_client(running, ca)) == grpc.StatusCode.UNAVAILABLE
        assert _refused(_client(running, ca, ca.client(expired=True))) == (
            grpc.StatusCode.UNAVAILABLE
        )
        assert _refused(_client(running, ca, stranger_ca.client())) == (grpc.StatusCode.UNAVAILABLE)


def test_the_purge_command_calls_over_mtls(
    start: Start,
    files: Files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = Authority()
    ca.server().write(files.cert, files.key)
    files.client_ca.write_bytes(ca.cert)
    cronjob = ca.client()
    cronjob.write(tmp_path / "client.crt", tmp_path / "client.key")
    (tmp_path / "ca.pem").write_bytes(ca.cert)
    monkeypatch.setenv("JWT_SECRET", SECRET)
    with start(mtls=True) as running:
        code = cli.main(
            [
                "purge",
                f"--target=127.0.0.1:{running.port}",
                f"--ca-file={tmp_path / 'ca.pem'}",
                f"--cert-file={tmp_path / 'client.crt'}",
                f"--key-file={tmp_path / 'client.key'}",
                "--server-name=localhost",
                "--dry-run",
                "--timeout=10",
            ]
        )
    assert (code, capsys.readouterr().out.strip()) == (0, "0")


def test_serve_with_workers_serves_tls_and_plaintext_health_then_drains(
    test_db: ThrowawayDatabase, files: Files, tmp_path: Path
) -> None:
    ca = Authority()
    ca.server().write(files.cert, files.key)
    port, health_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **server_env(
            test_db.service_url,
            GRPC_PORT=str(port),
            GRPC_HEALTH_PORT=str(health_port),
            METRICS_PORT=str(metrics_port),
            GRPC_TLS_CERT_FILE=str(files.cert),
            GRPC_TLS_KEY_FILE=str(files.key),
            WORKERS="2",
        ),
    }
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "profile_service", "serve"], env=env, stdout=log, stderr=log
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as plain:
            assert wait_for(lambda: health(plain) == SERVING, timeout=20)
        tls = TLS(root_certificates=ca.cert, server_name="localhost")
        # A connection of its own per client, so the kernel hands them to either worker.
        own = [("grpc.use_local_subchannel_pool", 1)]
        ages = []
        for age in range(30, 38):
            with ProfileClient(f"127.0.0.1:{port}", token=_token(), tls=tls, options=own) as c:
                ages.append(c.upsert(pb.Profile(age=age)).age)
        assert ages == list(range(30, 38))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (tmp_path / "server.log").read_text()


def test_the_plaintext_health_port_follows_the_database(
    test_db: ThrowawayDatabase, files: Files
) -> None:
    Authority().server().write(files.cert, files.key)
    with (
        serving_through_proxy(
            test_db.service_url,
            GRPC_TLS_CERT_FILE=str(files.cert),
            GRPC_TLS_KEY_FILE=str(files.key),
            GRPC_HEALTH_PORT="0",
        ) as (proxy, running, _),
        grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as plain,
    ):
        assert health(plain) == SERVING
        proxy.cut()
        assert wait_for(lambda: health(plain) == NOT_SERVING)
        assert health(plain, "") == NOT_SERVING
        assert health(plain, "liveness") == SERVING  # unready, never restarted
        proxy.restore()
        assert wait_for(lambda: health(plain) == SERVING)


def test_while_draining_the_health_port_answers_not_serving(
    start: Start, files: Files, test_db: ThrowawayDatabase
) -> None:
    ca = Authority()
    ca.server().write(files.cert, files.key)
    sub = str(uuid.uuid4())
    token = tokens.mint(SECRET, role="authenticated", sub=sub)
    tls = TLS(root_certificates=ca.cert, server_name="localhost")
    with start() as running:
        target, plain_target = f"127.0.0.1:{running.port}", f"127.0.0.1:{running.health_port}"
        with ProfileClient(target, token=token, tls=tls) as client:
            client.upsert(pb.Profile(age=30))
            answers: list[int] = []
            with (
                psycopg.connect(test_db.admin_url) as locker,
                psycopg.connect(test_db.admin_url, autocommit=True) as watcher,
            ):
                # Hold the row: the call below stays in flight, so the drain lasts.
                locker.execute(
                    "SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,)
                )
                in_flight = threading.Thread(
                    target=lambda: answers.append(client.upsert(pb.Profile(age=31)).age)
                )
                in_flight.start()
                assert wait_for(lambda: lock_waiters(watcher) == 1)
                stopping = threading.Thread(target=running.stop, args=(10,))
                stopping.start()
                with grpc.insecure_channel(plain_target) as plain:
                    # Answered, not refused, while the API drains.
                    assert wait_for(lambda: health(plain) == NOT_SERVING)
            in_flight.join(timeout=10)
            stopping.join(timeout=10)
    assert answers == [31]  # the call in flight finished
    assert not stopping.is_alive()


def test_the_plaintext_health_port_caps_streams_and_bounds_unfinished_requests(
    start: Start, files: Files
) -> None:
    # Under TLS the kubelet probes this port: a rapid-reset or unfinished-request flood there
    # must meet the same limits as on the API port (issue "Transport hardening").
    Authority().server().write(files.cert, files.key)
    with start() as running:
        port = running.health_port
        assert h2_attacks.advertised_max_streams(port) == server.MAX_STREAMS_PER_CONNECTION
        answer = call(
            port,
            "/grpc.health.v1.Health/Check",
            struct.pack(">BI", 0, 100),  # announces 100 bytes, sends none
            timeout=UNFINISHED_SECONDS + 10,
            end_stream=False,
        )
        assert answer.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert answer.reason == REASON
