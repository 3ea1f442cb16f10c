"""Calls gRPC itself started and failed, read from channelz: the ones no handler saw included.

gRPC's core ends some calls in the transport, before any interceptor: a header name in upper
case (`INTERNAL "Illegal header key"`), a message over the size limit, a stream its client
reset. The API's metrics never see those. Channelz, gRPC's own introspection (grpcio-channelz,
read in process, not served), counts every call each server started and how many failed; a task
copies their growth into Prometheus counters every INTERVAL_SECONDS. What core refused is then
the failed calls that the API's metrics do not count (docs/operations.md, section 8).
"""

import asyncio
import logging

from grpc_channelz.v1 import channelz, channelz_pb2

from profile_service.runtime import metrics

_LOGGER = logging.getLogger(__name__)
INTERVAL_SECONDS = 5.0


def server_ids() -> set[int]:
    """The channelz ids of the gRPC servers in this process."""
    return {server.ref.server_id for server in _servers()}


def _servers() -> list[channelz_pb2.Server]:
    servers: list[channelz_pb2.Server] = []
    start = 0
    while True:
        request = channelz_pb2.GetServersRequest(start_server_id=start)
        # The servicer's static methods answer in process; their context is used only to
        # report an error, which a list of servers does not raise.
        response = channelz.ChannelzServicer.GetServers(request, None)
        servers += response.server
        if response.end or not response.server:
            return servers
        start = response.server[-1].ref.server_id + 1


class CoreCalls:
    """Copies channelz's call counts of the servers `ids` into the metrics (a process may hold
    other servers: tests start several; channelz names a server by the address it was asked
    for, port 0 included, so ids are the only handle)."""

    def __init__(self, ids: set[int]) -> None:
        self._ids = ids
        self._seen: dict[int, tuple[int, int]] = {}  # server id → (started, failed)
        self._task: asyncio.Task[None] | None = None

    def observe(self) -> None:
        """Add what the servers started and failed since the last look."""
        for server in _servers():
            if server.ref.server_id not in self._ids:
                continue
            started, failed = server.data.calls_started, server.data.calls_failed
            before_started, before_failed = self._seen.get(server.ref.server_id, (0, 0))
            metrics.GRPC_CALLS_STARTED.inc(started - before_started)
            metrics.GRPC_CALLS_FAILED.inc(failed - before_failed)
            self._seen[server.ref.server_id] = (started, failed)

    def start(self, interval: float = INTERVAL_SECONDS) -> None:
        """Observe every `interval` seconds on the running loop, until stop()."""
        self._task = asyncio.get_running_loop().create_task(self._run(interval))

    async def stop(self) -> None:
        """Stop observing, after a last look."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.observe()

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.observe()
            except Exception:  # the counters are a convenience: never stop the server
                _LOGGER.exception("reading channelz failed")
