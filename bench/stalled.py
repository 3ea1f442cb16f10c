"""Stalled callers, kept up: `python -m bench.stalled TARGET CALLS`.

Holds CALLS Get calls that send their headers and never their request, 100 to a connection
(the server's stream limit), and opens a new one a second after the server ends one (it
gives a request a bounded time to arrive, and holds a bounded number: docs/operations.md,
section 12), so that about CALLS are stalled the whole time. Prints "held" once they are
open; on standard input's close, prints a JSON line with how many the server ended (and were
opened again), and exits.
"""

import asyncio
import collections
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

_PER_CONNECTION = 100
_REOPEN_SECONDS = 1.0


async def _never(stop: asyncio.Event) -> AsyncIterator[bytes]:
    await stop.wait()
    return
    yield b""  # pragma: no cover - makes this an async generator


async def main(target: str, calls: int) -> None:
    """Keep `calls` stalled calls open on `target` until standard input closes."""
    stop = asyncio.Event()
    ended: collections.Counter[str] = collections.Counter()
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(-(-calls // _PER_CONNECTION))
    ]

    async def hold(channel: grpc.aio.Channel) -> None:
        get: Any = channel.stream_unary("/profile.v1.ProfileService/Get")
        while not stop.is_set():
            call = get(_never(stop))
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                if not stop.is_set():
                    ended[exc.code().name] += 1
            if not stop.is_set():
                # As a client backing off: the server holds at most 500 unfinished calls and
                # evicts the oldest for a new one, so re-opening at once would be a flood.
                await asyncio.sleep(_REOPEN_SECONDS)

    tasks = [asyncio.ensure_future(hold(channels[i // _PER_CONNECTION])) for i in range(calls)]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    await asyncio.sleep(1)  # the calls' headers are on their way
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    for channel in channels:
        await channel.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"ended_by_server": dict(ended)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
