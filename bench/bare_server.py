"""A bare gRPC server: ProfileService.Get and Upsert answer a constant Profile, nothing else.

No interceptors, no token check, no database: what gRPC in Python costs on its own, i.e. the
ceiling the real service is compared with. It uses the generated servicer, so each call still
parses its request and serializes the (fully populated, 15-field) answer, as any service must.
`--kind sync` is `grpc.server` with a thread pool, `--kind aio` is `grpc.aio`. The caller pins
the process to a CPU (taskset).

    python -m bench.bare_server --kind sync --port 50100 [--threads 16]
"""

import argparse
import asyncio
import signal
import threading
from concurrent import futures
from typing import Any

import grpc

from bench.payloads import constant_profile
from profile_service.lifecycle import schedule_as_batch
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc


class _SyncServicer(pb_grpc.ProfileServiceServicer):
    def __init__(self, answer: pb.Profile) -> None:
        self._answer = answer

    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> pb.Profile:
        return self._answer

    def Upsert(self, request: pb.UpsertRequest, context: grpc.ServicerContext) -> pb.Profile:
        return self._answer

    def SoftDelete(
        self, request: pb.SoftDeleteRequest, context: grpc.ServicerContext
    ) -> pb.Profile:
        return self._answer

    def Undelete(self, request: pb.UndeleteRequest, context: grpc.ServicerContext) -> pb.Profile:
        return self._answer

    def BatchGetProfiles(
        self, request: pb.BatchGetProfilesRequest, context: grpc.ServicerContext
    ) -> pb.BatchGetProfilesResponse:
        return pb.BatchGetProfilesResponse(profiles=[self._answer] * len(request.owner_ids))

    def Purge(self, request: pb.PurgeRequest, context: grpc.ServicerContext) -> pb.PurgeResponse:
        return pb.PurgeResponse()


class _AioServicer(pb_grpc.ProfileServiceServicer):
    def __init__(self, answer: pb.Profile) -> None:
        self._answer = answer

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.Profile:
        return self._answer

    async def Upsert(self, request: pb.UpsertRequest, context: Any) -> pb.Profile:
        return self._answer

    async def SoftDelete(self, request: pb.SoftDeleteRequest, context: Any) -> pb.Profile:
        return self._answer

    async def Undelete(self, request: pb.UndeleteRequest, context: Any) -> pb.Profile:
        return self._answer

    async def BatchGetProfiles(
        self, request: pb.BatchGetProfilesRequest, context: Any
    ) -> pb.BatchGetProfilesResponse:
        return pb.BatchGetProfilesResponse(profiles=[self._answer] * len(request.owner_ids))

    async def Purge(self, request: pb.PurgeRequest, context: Any) -> pb.PurgeResponse:
        return pb.PurgeResponse()


def _serve_sync(port: int, threads: int, answer: pb.Profile) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_ProfileServiceServicer_to_server(_SyncServicer(answer), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop(0).wait()


async def _serve_aio(port: int, answer: pb.Profile) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ProfileServiceServicer_to_server(_AioServicer(answer), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await server.start()
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["sync", "aio"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="sync: thread pool size")
    parser.add_argument(
        "--sched-batch", action="store_true", help="run under SCHED_BATCH, as the service does"
    )
    args = parser.parse_args()
    if args.sched_batch:
        # Before any thread starts, as the service does it (profile_service.lifecycle.run).
        schedule_as_batch()
    answer = constant_profile()
    if args.kind == "sync":
        _serve_sync(args.port, args.threads, answer)
    else:
        asyncio.run(_serve_aio(args.port, answer))


if __name__ == "__main__":
    main()
