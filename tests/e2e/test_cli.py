"""The `profile-service` command line, run as the CronJob and an operator would run it."""

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import jwt
import psycopg
import pytest

from devtools import database as devdb
from profile_service.auth import tokens
from profile_service.transport.server import RunningServer
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import SECRET, server_env, wait_for
from tests.e2e.probes import free_port
from tests.e2e.serve_process import CLI, serving_command


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
    return subprocess.run(
        [CLI, *args], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def test_token_prints_only_a_token_with_the_asked_claims() -> None:
    sub = str(uuid.uuid4())
    result = _run("token", "--sub", sub, "--ttl", "120", JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "\n" not in token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == (sub, "authenticated")
    assert claims["exp"] - claims["iat"] == 120


def test_token_for_a_service_lasts_an_hour_by_default() -> None:
    result = _run("token", "--role", "service_role", JWT_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["role"] == "service_role"
    assert "sub" not in claims
    assert claims["exp"] - claims["iat"] == 3600


def test_token_for_a_user_needs_a_sub() -> None:
    result = _run("token", JWT_SECRET=SECRET)
    assert result.returncode == 2
    assert "--sub" in result.stderr


def test_token_without_a_secret_says_what_is_missing() -> None:
    result = _run("token", "--role", "service_role")
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr


def _seed_expired(admin: psycopg.Connection, count: int) -> None:
    for _ in range(count):
        admin.execute(
            "INSERT INTO profile.profiles (owner_id, deleted_at) "
            "VALUES (%s, now() - interval '40 days')",
            (uuid.uuid4(),),
        )


def test_purge_prints_the_count_and_exits_zero(
    running_server: RunningServer, admin: psycopg.Connection
) -> None:
    _seed_expired(admin, 3)
    target = f"127.0.0.1:{running_server.port}"
    dry = _run("purge", "--target", target, "--dry-run", JWT_SECRET=SECRET)
    assert (dry.returncode, dry.stdout.strip()) == (0, "3"), dry.stderr
    real = _run("purge", "--target", target, "--batch-size", "2", JWT_SECRET=SECRET)
    assert (real.returncode, real.stdout.strip()) == (0, "3"), real.stderr
    assert admin.execute("SELECT count(*) FROM profile.profiles").fetchone() == (0,)


def test_purge_with_a_given_token_needs_no_secret(
    running_server: RunningServer, admin: psycopg.Connection
) -> None:
    _seed_expired(admin, 2)
    token = tokens.mint(SECRET, role="service_role", ttl_seconds=120)
    target = f"127.0.0.1:{running_server.port}"
    result = _run("purge", "--target", target, "--token", token)  # no JWT_SECRET here
    assert (result.returncode, result.stdout.strip()) == (0, "2"), result.stderr


def test_purge_fails_visibly_when_the_server_refuses(running_server: RunningServer) -> None:
    target = f"127.0.0.1:{running_server.port}"
    result = _run("purge", "--target", target, "--retention-days", "5", JWT_SECRET=SECRET)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    forged = _run("purge", "--target", target, JWT_SECRET="a-different-secret-of-enough-length")
    assert forged.returncode == 1
    assert "UNAUTHENTICATED" in forged.stderr


def test_purge_fails_visibly_when_the_server_is_down() -> None:
    # The client retries UNAVAILABLE a few times (service_config.json), then reports it.
    result = _run("purge", "--target", "127.0.0.1:1", "--timeout", "10", JWT_SECRET=SECRET)
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_migrate_needs_database_url() -> None:
    result = _run("migrate")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_migrate_upgrades_the_database(server_admin_url: str) -> None:
    name = devdb.create_database(server_admin_url, prefix="profile_cli")
    url = devdb.with_database(server_admin_url, name)
    try:
        result = _run("migrate", DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT to_regclass('profile.profiles') IS NOT NULL").fetchone()
        assert row == (True,)
    finally:
        devdb.drop_database(server_admin_url, name)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ["DATABASE_URL is required", "JWT_SECRET is required"]),
        ({"PURGE_MIN_RETENTION_DAYS": "10"}, ["PURGE_MIN_RETENTION_DAYS must be at least 30"]),
        ({"GRPC_PORT": "http"}, ["GRPC_PORT must be a whole number"]),
        ({"JWT_SECRET": "short"}, ["JWT_SECRET must be at least 32 characters"]),
        ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL must be one of"]),
    ],
)
def test_serve_stops_at_start_up_on_bad_configuration(
    test_db: ThrowawayDatabase, env: dict[str, str], expected: list[str]
) -> None:
    full = server_env(test_db.service_url) if env else {}
    result = _run("serve", **{**full, **env})
    assert result.returncode == 2
    for message in expected:
        assert message in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_login_role_that_bypasses_rls(
    test_db: ThrowawayDatabase, workers: str
) -> None:
    result = _run("serve", **server_env(test_db.admin_url, WORKERS=workers, GRPC_PORT="50999"))
    assert result.returncode == 2
    assert "superuser" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_database_that_was_not_migrated(server_admin_url: str) -> None:
    name = devdb.create_database(server_admin_url, prefix="profile_unmigrated")
    try:
        result = _run("serve", **server_env(devdb.with_database(server_admin_url, name)))
        assert result.returncode == 2
        assert "run `profile-service migrate`" in result.stderr
    finally:
        devdb.drop_database(server_admin_url, name)


def test_serve_refuses_a_fresh_cluster_where_nothing_was_ever_migrated(tmp_path: Path) -> None:
    # Not even the cluster-wide API roles exist there (the shared test server has them).
    import pgserver

    cluster = pgserver.get_server(tmp_path / "cluster", cleanup_mode="stop")
    try:
        result = _run("serve", **server_env(str(cluster.get_uri())))
    finally:
        cluster.cleanup()
    assert result.returncode == 2, result.stderr
    assert "run `profile-service migrate`" in result.stderr


def test_serve_exits_1_naming_the_problem_when_the_database_is_unreachable() -> None:
    url = "postgresql://profile_service@127.0.0.1:1/profile"
    result = _run("serve", **server_env(url))
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "policy"), [("true", os.SCHED_BATCH), ("false", os.SCHED_OTHER)]
)
def test_serve_runs_every_thread_under_the_scheduling_policy_asked(
    test_db: ThrowawayDatabase, setting: str, policy: int
) -> None:
    env = server_env(test_db.service_url, GRPC_PORT=str(free_port()), SCHED_BATCH=setting)
    with serving_command(env) as process:
        threads = [int(tid) for tid in os.listdir(f"/proc/{process.pid}/task")]
        # gRPC's, the connection pool's and the health checker's threads are all running.
        assert len(threads) >= 4
        assert {os.sched_getscheduler(tid) for tid in threads} == {policy}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin two workers")
@pytest.mark.parametrize(("workers", "pinned"), [("match", True), ("more", False)])
def test_workers_are_pinned_only_when_they_match_the_usable_cpus(
    test_db: ThrowawayDatabase, workers: str, pinned: bool
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    count = len(cpus) if workers == "match" else len(cpus) + 1
    env = server_env(
        test_db.service_url,
        GRPC_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        WORKERS=str(count),
    )
    expected = [(cpu,) for cpu in cpus] if pinned else [tuple(cpus)] * count

    def affinities(pid: int) -> list[tuple[int, ...]]:
        return sorted(tuple(sorted(os.sched_getaffinity(c))) for c in _serving_children(pid))

    with serving_command(env) as process:
        assert wait_for(lambda: len(_serving_children(process.pid)) == count, timeout=20)
        # Each worker pins itself once it runs: wait for it, on a loaded machine too.
        wait_for(lambda: affinities(process.pid) == expected, timeout=10)
        found = affinities(process.pid)
    assert found == expected


def _serving_children(pid: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    workers = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_text()
        except OSError:  # gone meanwhile
            continue
        if "resource_tracker" not in command:
            workers.append(int(child))
    return workers


# SIGTERM to the supervisor (Kubernetes), or SIGINT to the whole process group (Ctrl-C in a
# terminal, which reaches the workers directly too).
@pytest.mark.parametrize("stop", ["sigterm", "ctrl-c"])
def test_a_stop_while_workers_start_is_a_clean_stop(
    test_db: ThrowawayDatabase, tmp_path: Path, stop: str
) -> None:
    env = server_env(
        test_db.service_url,
        GRPC_PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        WORKERS="2",
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
    # A file, not a pipe: multiprocessing's resource tracker may hold a pipe open after we exit.
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CLI, "serve"], env={**clean, **env}, stdout=out, stderr=out, start_new_session=True
        )
        try:
            # As soon as the workers exist, long before they serve (spawning imports gRPC anew).
            assert wait_for(lambda: len(_serving_children(process.pid)) >= 1, timeout=20)
            if stop == "sigterm":
                process.terminate()
            else:
                os.killpg(process.pid, signal.SIGINT)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                for child in _serving_children(process.pid):
                    os.kill(child, signal.SIGKILL)
                process.kill()
                process.wait()
    assert code == 0, log.read_text()[-2000:]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("setting", ["METRICS_PORT", "GRPC_PORT"])
def test_serve_refuses_a_taken_port_in_one_line(
    test_db: ThrowawayDatabase, workers: str, setting: str
) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as holder:
        holder.bind(("::", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = server_env(
            test_db.service_url,
            WORKERS=workers,
            GRPC_PORT=str(free_port()),
            METRICS_PORT=str(free_port()),
        )
        result = _run("serve", **{**env, setting: str(port)})
    assert result.returncode == 2
    assert f"{setting} {port} is not free" in result.stderr
    assert "Traceback" not in result.stderr
