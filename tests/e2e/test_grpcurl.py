"""The real grpcurl, through reflection only: the commands `make run` prints must work."""

import subprocess
import sys
from pathlib import Path

import psycopg

from profile_service.dev.run import DEMO_USER, grpcurl_commands
from profile_service.server import RunningServer
from tests.e2e.conftest import SECRET

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


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
    # The demo user's profile went through create, masked update and soft delete.
    row = admin.execute(
        "SELECT age, height_cm, deleted_at IS NOT NULL FROM profile.profiles WHERE owner_id = %s",
        (DEMO_USER,),
    ).fetchone()
    assert row == (35, 170, True)
    assert '"purgeCount": "0"' in result.stdout  # lowerCamelCase JSON names
    assert '"status": "SERVING"' in result.stdout
