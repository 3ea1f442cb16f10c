"""A graceful stop (SIGTERM) under load: every call is answered OK or a retryable UNAVAILABLE,
never CANCELLED (which clients do not retry), on a `profile-service serve` of its own."""

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import server_env, user, wait_for
from tests.e2e.probes import SERVING, free_port, health

CALLERS = 8


def test_sigterm_under_load_answers_no_call_cancelled(
    test_db: ThrowawayDatabase, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **server_env(test_db.service_url, GRPC_PORT=str(port), SHUTDOWN_GRACE_SECONDS="5"),
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "profile_service", "serve"], env=env, stdout=log, stderr=log
    )
    codes: collections.Counter[grpc.StatusCode] = collections.Counter()
    details: dict[grpc.StatusCode, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)
            sub = uuid.uuid4()
            pb_grpc.ProfileServiceStub(channel).Upsert(
                pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=user(sub), timeout=5
            )

        def caller() -> None:
            # Each caller on a connection of its own, calling back to back, as a busy client.
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(target, options=options) as own:
                stub = pb_grpc.ProfileServiceStub(own)
                md = user(sub)
                while not stop.is_set():
                    try:
                        stub.Get(pb.GetRequest(), metadata=md, timeout=2)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as error:
                        code = error.code()
                        with lock:
                            details.setdefault(code, error.details() or "")
                    with lock:
                        codes[code] += 1

        threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        time.sleep(0.3)  # callers meet the closed port too
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    print("codes:", dict(codes), "details:", details)
    assert codes[grpc.StatusCode.OK] > 0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, details
