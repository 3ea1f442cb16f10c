"""A closed-loop gRPC load generator in Python that checks the status of every call.

`concurrency` tasks on one `grpc.aio` event loop, each on its own connection (channel), each
sending its next call as soon as the last one returns. Requests and responses stay bytes
(pre-serialized body, no parsing of the answer), so the client spends its time in gRPC
itself. Every call carries its own `authorization: Bearer` token, taken in turn from a list:
that is what h2load cannot do (one header set per process), and why Upsert, where each call
must write a different owner's row, runs on this client.

Run by bench/run.py as a subprocess pinned to the load generator's CPU:

    BENCH_JWT_SECRET=... python -m bench.client SPEC.json

SPEC is a JSON object (see `Spec`); the result is one JSON object on stdout.
"""

import asyncio
import collections
import functools
import itertools
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc

from bench.payloads import CALL_TIMEOUT_SECONDS, METHODS, REQUESTS, new_user_tokens, seeded_owner
from profile_service.auth import tokens
from profile_service.v1 import profile_service_pb2 as pb


@dataclass(frozen=True)
class Spec:
    """What to run: against `target`, `rpc` calls from `concurrency` connections.

    Timed mode (`calls` is 0): `warmup` seconds unrecorded, then `duration` seconds recorded.
    Counted mode (`calls` > 0): exactly that many calls, all recorded (correctness checks).
    Tokens: `tokens_file` (one token a line) or, if empty, `mint` fresh users' tokens
    (role authenticated, `sub` a new UUID each) signed with $BENCH_JWT_SECRET.
    `owners` > 0: calls on seeded profiles 1..owners drawn at random (fixed seed): a Get is
    service_role's naming one (one token), an Upsert a random owner's own (`mint` owners'
    tokens). `rate` > 0: at most that many calls a second, spread evenly (an open pace, not
    as fast as answers come). `stop_file`: in timed mode, also stop once that file exists (the
    measured window ends there).
    """

    target: str
    rpc: str
    concurrency: int
    warmup: float = 0.0
    duration: float = 0.0
    calls: int = 0
    tokens_file: str = ""
    mint: int = 0
    connections: int = 0
    owners: int = 0
    rate: float = 0.0
    stop_file: str = ""


# Distinct request bodies for random-owner Gets: enough that the database reads all over the
# table, few enough to build in a moment.
_RANDOM_BODIES = 50_000


def _load_tokens(spec: Spec) -> list[str]:
    if spec.owners:
        secret = os.environ["BENCH_JWT_SECRET"]
        if spec.rpc == "get":
            return [tokens.mint(secret, role="service_role", ttl_seconds=7200)]
        draw = random.Random(2)  # noqa: S311 - a reproducible sample, not a secret
        chosen = draw.sample(range(1, spec.owners + 1), min(spec.mint, spec.owners))
        return [
            tokens.mint(secret, role="authenticated", sub=seeded_owner(n), ttl_seconds=7200)
            for n in chosen
        ]
    if spec.tokens_file:
        with open(spec.tokens_file, encoding="ascii") as f:
            return [line.strip() for line in f if line.strip()]
    return new_user_tokens(os.environ["BENCH_JWT_SECRET"], spec.mint)


def _percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1] / 1e6


def _bodies(spec: Spec) -> list[bytes]:
    if spec.owners and spec.rpc == "get":
        draw = random.Random(1)  # noqa: S311 - a reproducible sample, not a secret
        return [
            pb.GetRequest(owner_id=seeded_owner(draw.randint(1, spec.owners))).SerializeToString()
            for _ in range(min(_RANDOM_BODIES, spec.owners))
        ]
    return [REQUESTS[spec.rpc]()]


async def _run(spec: Spec, token_list: list[str]) -> dict[str, Any]:
    bodies = _bodies(spec)
    metadata = [(("authorization", f"Bearer {t}"),) for t in token_list]
    # A local subchannel pool per channel: one TCP connection each, as h2load's clients have.
    channels = [
        grpc.aio.insecure_channel(spec.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(min(spec.connections or spec.concurrency, spec.concurrency))
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in channels)), 10
        )
        stubs: list[Any] = [channel.unary_unary(METHODS[spec.rpc]) for channel in channels]
        counter = itertools.count()
        latencies: list[int] = []
        errors: collections.Counter[str] = collections.Counter()
        start = time.perf_counter_ns()
        record_from = start + int(spec.warmup * 1e9)
        stop_at = record_from + int(spec.duration * 1e9)
        budget = iter(range(spec.calls)) if spec.calls else None
        if budget is None:
            # Tell the bench when the measured window opens and closes (it reads server CPU).
            loop_time = asyncio.get_running_loop().time()
            for mark, at in (("measure-start", record_from), ("measure-end", stop_at)):
                asyncio.get_running_loop().call_at(
                    loop_time + (at - time.perf_counter_ns()) / 1e9,
                    functools.partial(print, mark, flush=True),
                )
        cpu_start = resource.getrusage(resource.RUSAGE_SELF)

        # With a rate, call k is due at start + k / rate, whoever makes it.
        interval_ns = int(1e9 / spec.rate) if spec.rate else 0
        stopped_at: list[int] = []

        async def watch_stop_file() -> None:
            while not os.path.exists(spec.stop_file):
                await asyncio.sleep(0.05)
            stopped_at.append(time.perf_counter_ns())

        watcher = asyncio.ensure_future(watch_stop_file()) if spec.stop_file else None

        async def loop(stub: Any) -> None:
            while True:
                began = time.perf_counter_ns()
                if budget is not None:
                    if next(budget, None) is None:
                        return
                elif began >= stop_at or stopped_at:
                    return
                index = next(counter)
                if interval_ns:
                    due = start + index * interval_ns
                    if due > began:
                        await asyncio.sleep((due - began) / 1e9)
                        began = time.perf_counter_ns()
                md = metadata[index % len(metadata)]
                body = bodies[index % len(bodies)]
                try:
                    await stub(body, metadata=md, timeout=CALL_TIMEOUT_SECONDS)
                    code = None
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                if budget is not None or began >= record_from:
                    latencies.append(time.perf_counter_ns() - began)
                    if code is not None:
                        errors[code] += 1

        await asyncio.gather(*(loop(stubs[i % len(stubs)]) for i in range(spec.concurrency)))
        if watcher is not None:
            watcher.cancel()
        wall = (time.perf_counter_ns() - start) / 1e9
        cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    used = next(counter)
    latencies.sort()
    seconds = spec.duration if not spec.calls else wall
    if stopped_at:
        seconds = (stopped_at[0] - start) / 1e9 - spec.warmup
    return {
        "calls": len(latencies),
        "ok": len(latencies) - sum(errors.values()),
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
        "rps": (len(latencies) - sum(errors.values())) / seconds if seconds else 0.0,
        "p50_ms": _percentile(latencies, 0.50),
        "p90_ms": _percentile(latencies, 0.90),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else 0.0,
        "tokens": len(token_list),
        "tokens_reused": max(0, used - len(token_list)),
        "loadgen_cpu": (
            cpu_end.ru_utime + cpu_end.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime
        )
        / wall,
    }


def main() -> None:
    """Read the spec, run it, print the result as JSON."""
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = Spec(**json.load(f))
    token_list = _load_tokens(spec)
    print(json.dumps(asyncio.run(_run(spec, token_list))), flush=True)


if __name__ == "__main__":
    main()
