"""`python -m bench.attacks` (`make bench-attacks`): the unauthenticated HTTP/2 attacks of issue
"Transport hardening", each against a fresh `profile-service serve` (one worker) with a
legitimate client beside it, with and without MALLOC_ARENA_MAX=2 (the image's setting).

Per attack: the share of the legitimate client's Gets and health checks answered OK, their p99,
the server's peak RSS (VmHWM) and its RSS a few seconds after the attack. Results go to
bench/results/attacks.json and a table on stdout; the story is in bench/README.md.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import database
from bench.options import RESULTS_DIR
from bench.procs import free_port
from profile_service.auth import tokens
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc

_SECRET = "bench-attacks-secret-long-enough-for-hs256"  # noqa: S105 - a throwaway server
_CLI = str(Path(sys.executable).parent / "profile-service")
# name → the attackers run at once, each as devtools/h2_attacks.py's arguments after the port.
_RAPID_RESET_GET = ["rapid-reset", "10"]
_RAPID_RESET_HEALTH = ["rapid-reset", "10", "/grpc.health.v1.Health/Check"]
_BAD_HEADERS = ["bad-headers", "10"]
ATTACKS: dict[str, list[list[str]]] = {
    "none": [],
    "rapid-reset-get": [_RAPID_RESET_GET],
    "rapid-reset-health": [_RAPID_RESET_HEALTH],
    "bad-headers": [_BAD_HEADERS],
    "unfinished-8x1000": [["unfinished", "8", "1000"]],
    "unfinished-40x100": [["unfinished", "40", "100"]],
    "all-at-once": [
        _RAPID_RESET_GET,
        _RAPID_RESET_HEALTH,
        _BAD_HEADERS,
        ["unfinished", "8", "1000"],
        ["unfinished", "40", "100"],
    ],
}


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Legitimate:
    """A Get and a health check every 10 ms, 1 s deadline each."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        sub = str(uuid.uuid4())
        self.metadata = (
            ("authorization", "Bearer " + tokens.mint(_SECRET, role="authenticated", sub=sub)),
        )
        self.stub = pb_grpc.ProfileServiceStub(self.channel)
        self.stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=self.metadata)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.results: list[tuple[bool, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for call in (
                lambda: self.stub.Get(pb.GetRequest(), metadata=self.metadata, timeout=1),
                lambda: self.health.Check(health_pb2.HealthCheckRequest(), timeout=1),
            ):
                started = time.monotonic()
                try:
                    call()
                    self.results.append((True, time.monotonic() - started))
                except grpc.RpcError:
                    self.results.append((False, time.monotonic() - started))
            self.stop.wait(0.01)

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        self.thread.join()
        self.channel.close()
        latencies = sorted(took for _, took in self.results)
        ok = sum(1 for passed, _ in self.results if passed)
        return {
            "calls": len(self.results),
            "ok_share": ok / max(1, len(self.results)),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        }


def run_one(
    db: database.BenchDatabase, attack: str, arena: bool, serve: list[str]
) -> dict[str, Any]:
    """One attack against a fresh server; its figures."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db.service_url,
        "JWT_SECRET": _SECRET,
        "GRPC_PORT": str(port),
        "METRICS_PORT": str(free_port()),
        "WORKERS": "1",
    }
    env.pop("MALLOC_ARENA_MAX", None)
    if arena:
        env["MALLOC_ARENA_MAX"] = "2"
    server = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        legit = _wait_for_server(port)
        idle = _rss_mb(server.pid, "VmRSS")
        attackers = [
            subprocess.Popen(
                [sys.executable, "-m", "devtools.h2_attacks", args[0], str(port), *args[1:]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for args in ATTACKS[attack]
        ]
        said = []
        for attacker in attackers:  # the timed ones print at their end, the others once held
            assert attacker.stdout is not None
            said.append(attacker.stdout.readline().strip())
        time.sleep(5 if attackers else 10)  # what is held, held a while
        for attacker in attackers:
            assert attacker.stdin is not None
            attacker.stdin.close()
            attacker.wait(timeout=60)
        attacker_said = ", ".join(said)
        figures = legit.finish()
        time.sleep(3)
        return {
            "attack": attack,
            "malloc_arena_max": 2 if arena else None,
            "attacker": attacker_said,
            **figures,
            "rss_idle_mb": idle,
            "rss_peak_mb": _rss_mb(server.pid, "VmHWM"),
            "rss_after_mb": _rss_mb(server.pid, "VmRSS"),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_server(port: int) -> _Legitimate:
    deadline = time.monotonic() + 30
    while True:
        try:
            return _Legitimate(port)
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """Run every attack, with and without MALLOC_ARENA_MAX=2; print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated names")
    parser.add_argument(
        "--serve",
        default=f"{_CLI} serve",
        help="the command that serves, shell-split (to measure another checkout, say)",
    )
    parser.add_argument(
        "--arena", default="unset,2", help="MALLOC_ARENA_MAX settings to run each attack with"
    )
    args = parser.parse_args(argv)
    db = database.prepare("profile_bench_attacks", 1000)
    rows = []
    try:
        for attack in args.attacks.split(","):
            for arena in (setting == "2" for setting in args.arena.split(",")):
                row = run_one(db, attack, arena, shlex.split(args.serve))
                rows.append(row)
                print(
                    f"{attack:20} arena={'2' if arena else '-'}  ok {100 * row['ok_share']:5.1f} %"
                    f" of {row['calls']:5}  p99 {row['p99_ms'] or 0:7.1f} ms"
                    f"  RSS idle {row['rss_idle_mb']:4.0f}  peak {row['rss_peak_mb']:4.0f}"
                    f"  after {row['rss_after_mb']:4.0f} MB  ({row['attacker']})",
                    flush=True,
                )
    finally:
        database.drop(db)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "attacks.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
