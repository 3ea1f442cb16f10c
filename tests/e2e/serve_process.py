"""`profile-service serve` as a process of its own, for tests that measure it from outside
(its memory, its threads) or that must not share the test's interpreter with it."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import grpc

from tests.e2e.conftest import wait_for
from tests.e2e.probes import SERVING, health

CLI = str(Path(sys.executable).parent / "profile-service")


@contextmanager
def serving_command(
    env: dict[str, str], stderr: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """`profile-service serve` with `env` (GRPC_PORT set), once it reports SERVING; it must
    then stop with 0."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
    process = subprocess.Popen(
        [CLI, "serve"], env={**clean, **env}, stdout=subprocess.DEVNULL, stderr=stderr
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{env['GRPC_PORT']}") as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)
        yield process
    finally:
        process.terminate()
        code = process.wait(timeout=30)
    assert code == 0


def peak_rss_mb(pid: int) -> float:
    """The most memory the process has held at once (VmHWM), in MB."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float:
    """The memory the process holds now (VmRSS), in MB."""
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")
