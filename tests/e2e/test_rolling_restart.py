"""A rolling restart costs callers nothing: two servers behind one target (round robin, as a
client of the headless Service), 16 callers on one ProfileClient with the shipped service
config, and each server in turn stopped (SIGTERM, drain) and started again."""

import collections
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc

from profile_service.auth import tokens
from profile_service.client import ProfileClient
from profile_service.errors import ServiceError
from profile_service.v1 import profile_service_pb2 as pb
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import SECRET, server_env, wait_for
from tests.e2e.probes import SERVING, free_port, health, scrape
from tests.e2e.serve_process import CLI

CALLERS = 16
_GETS_OK = ("profile_requests_total", (("code", "OK"), ("method", "Get")))


class _Server:
    """`profile-service serve` on a fixed port, which can be stopped and started again."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
        self._env = {
            **clean,
            **server_env(
                database_url,
                GRPC_PORT=str(self.port),
                METRICS_PORT=str(self.metrics_port),
                SHUTDOWN_GRACE_SECONDS="5",
            ),
        }
        self._log = log.open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [CLI, "serve"], env=self._env, stdout=self._log, stderr=self._log
        )
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(timeout=30) == 0

    def gets_served(self) -> float:
        try:
            return scrape(self.metrics_port).get(_GETS_OK, 0.0)
        except OSError:
            return 0.0

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def test_restarting_each_of_two_servers_in_turn_fails_no_call(
    test_db: ThrowawayDatabase, tmp_path: Path
) -> None:
    servers = [_Server(test_db.service_url, tmp_path / f"server{i}.log") for i in range(2)]
    served: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    try:
        for server in servers:
            server.start()
        target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        sub = str(uuid.uuid4())
        token = tokens.mint(SECRET, role="authenticated", sub=sub)
        client = ProfileClient(
            target, token=token, options=[("grpc.lb_policy_name", "round_robin")]
        )
        client.upsert(pb.Profile(age=30), timeout=5)

        def caller() -> None:
            while not stop.is_set():
                try:
                    client.get(timeout=5)
                    outcome = None
                except ServiceError as error:
                    outcome = f"{error.code.name} {error.reason}: {error}"
                with lock:
                    if outcome is None:
                        served["ok"] += 1
                    else:
                        failed[outcome] += 1

        threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        for server in servers:  # as a rollout replaces pods: one at a time
            server.stop()
            server.start()
            # Ready again, and the client's connection back: only then the next one.
            assert wait_for(lambda s=server: s.gets_served() > 20, timeout=30)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
    finally:
        stop.set()
        for server in servers:
            server.kill()
    print("served:", dict(served), "failed:", dict(failed))
    assert served["ok"] > 0
    assert dict(failed) == {}
