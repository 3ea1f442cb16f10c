"""A graceful stop (SIGTERM) under load: every call is answered OK or a retryable UNAVAILABLE,
never CANCELLED (which clients do not retry), on a `profile-service serve` of its own."""

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import server_env, user, wait_for
from tests.e2e.probes import SERVING, free_port, health

CALLERS = 8


@pytest.mark.parametrize("connections", ["one per caller", "one shared"])
def test_sigterm_under_load_answers_no_call_cancelled(
    test_db: ThrowawayDatabase, tmp_path: Path, connections: str
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
    answers: collections.Counter[str] = collections.Counter()  # failed calls' messages
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

        shared = grpc.insecure_channel(target)

        def caller() -> None:
            # Calling back to back, as a busy client.
            options = [("grpc.use_local_subchannel_pool", 1)]
            with (
                grpc.insecure_channel(target, options=options)
                if connections == "one per caller"
                else contextlib.nullcontext(shared)
            ) as channel:
                stub = pb_grpc.ProfileServiceStub(channel)
                md = user(sub)
                while not stop.is_set():
                    try:
                        stub.Get(pb.GetRequest(), metadata=md, timeout=2)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as error:
                        code = error.code()
                        with lock:
                            answers[error.details() or ""] += 1
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
        shared.close()
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    print("codes:", dict(codes), "messages:", dict(answers))
    assert codes[grpc.StatusCode.OK] > 0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, answers
    # The callers in flight were told by the server itself, before it closed its port.
    assert answers["the server is shutting down"] >= 1
