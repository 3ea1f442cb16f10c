"""The real grpcurl, through reflection only: the commands `make run` prints must work."""

import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import grpc
import psycopg

from devtools.run import DEMO_USER, DEV_JWT_SECRET, grpcurl_commands
from profile_service.transport.server import RunningServer
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import SECRET, bearer, rpc_error, wait_for
from tests.e2e.probes import GRPCURL, SERVING, free_port, health


def _grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_and_describes_through_reflection(running_server: RunningServer) -> None:
    target = f"127.0.0.1:{running_server.port}"
    assert "profile.v1.ProfileService" in _grpcurl(target, "list").split()
    described = _grpcurl(target, "describe", "profile.v1.Profile")
    assert ".google.protobuf.Struct generation_params = 12;" in described
    assert "Age in whole years, 13 to 120." in described  # the proto comments travel too


def test_the_commands_make_run_prints_work_when_pasted(
    running_server: RunningServer, admin: psycopg.Connection
) -> None:
    script = grpcurl_commands(running_server.port, GRPCURL, SECRET)
    commands = script[script.index("export USER_TOKEN") : script.index("More tokens")]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The demo user's profile went through create, masked update, soft delete and undelete.
    row = admin.execute(
        "SELECT age, height_cm, deleted_at IS NOT NULL FROM profile.profiles WHERE owner_id = %s",
        (DEMO_USER,),
    ).fetchone()
    assert row == (35, 170, False)
    assert '"purgeCount": "0"' in result.stdout  # lowerCamelCase JSON names
    assert '"profiles": [' in result.stdout  # BatchGetProfiles answered (only it has that)
    assert '"status": "SERVING"' in result.stdout
    assert f'owner_id: "{DEMO_USER}"' in result.stdout  # ProfileClient's Get (text format)


def test_make_run_serves_with_the_development_secret_it_prints() -> None:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "GRPC_PORT": str(port), "METRICS_PORT": str(metrics_port), "WORKERS": "1"}
    env.pop("JWT_SECRET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run"],
        cwd=Path(__file__).parents[2],  # devtools/ lives beside the package, not in it
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # Should the banner never come, this ends the read below instead of hanging the suite.
    give_up = threading.Timer(60, process.kill)
    give_up.start()
    try:
        assert process.stdout is not None
        printed = ""
        for line in process.stdout:  # the banner ends with how to stop
            printed += line
            if line.startswith("Stop with Ctrl-C"):
                break
        give_up.cancel()
        assert f"JWT_SECRET={DEV_JWT_SECRET} " in printed
        (token,) = re.findall(r"export SERVICE_TOKEN=(\S+)", printed)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)
            # A read of nobody's profile: the token is accepted (NOT_FOUND, not UNAUTHENTICATED)
            # and the developer's database is left as it was.
            request = pb.GetRequest(owner_id=str(uuid.uuid4()))
            error = rpc_error(
                lambda: pb_grpc.ProfileServiceStub(channel).Get(
                    request, metadata=bearer(token), timeout=5
                )
            )
            assert error.code() == grpc.StatusCode.NOT_FOUND
    finally:
        give_up.cancel()
        process.terminate()
        code = process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert code == 0
