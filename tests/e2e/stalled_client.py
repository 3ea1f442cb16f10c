"""A client that opens calls and never sends their request: `python -m tests.e2e.stalled_client
TARGET CALLS STREAMS`. Holds CALLS headers-only Get calls and STREAMS reflection streams that
never send a message, all on one connection, prints "held" once they are open, and keeps them
until its standard input closes.
"""

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc.aio


async def _never(stop: asyncio.Event) -> AsyncIterator[bytes]:
    await stop.wait()
    return
    yield b""  # pragma: no cover - makes this an async generator


async def main(target: str, calls: int, streams: int) -> None:
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(target) as channel:
        get = channel.stream_unary("/profile.v1.ProfileService/Get")
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )
        held = [get(_never(stop)) for _ in range(calls)]
        held += [reflect(_never(stop)) for _ in range(streams)]
        await channel.channel_ready()
        await asyncio.sleep(1)  # the calls' headers are on their way
        print("held", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for call in held:
            call.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
