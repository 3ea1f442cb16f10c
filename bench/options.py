"""The bench's command line (`python -m bench --help`)."""

import argparse
from pathlib import Path

from bench import payloads

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The bare servers (bench/bare_server.py, bench/targets.py).
TARGETS = ("bare-sync", "bare-aio", "bare-aio-uvloop", "bare-aio-io")
# Asked for by name only: a diagnosis, not a ceiling.
EXTRA_TARGETS = ("bare-aio-yield",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the Profile Service against bare gRPC servers (the ceiling).",
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="measured seconds per run of a cell"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per cell; the cell is the fastest run (virtual machines are noisy)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--concurrency", default="1,16,64", help="calls in flight, e.g. 1,16,64")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1.5 s cells, 0.5 s warm-up"
    )
    parser.add_argument("--rpc", default="get,upsert", help="RPCs to load: get,upsert")
    parser.add_argument(
        "--targets",
        default=",".join((*TARGETS, "real")),
        help="servers: bare-sync, bare-aio (asyncio's loop), bare-aio-uvloop, bare-aio-io (one "
        "PostgreSQL round trip a call, on the service's loop), real (default: all of these); "
        "also bare-aio-yield (one suspension a call, no I/O)",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker counts for the real server; above 1 only if `serve --help` lists --workers",
    )
    parser.add_argument(
        "--pin-workers",
        action="store_true",
        help="also run each multi-worker server with worker i pinned to CPU i (all threads)",
    )
    parser.add_argument("--profiles", type=int, default=100_000, help="seeded profiles")
    parser.add_argument("--get-tokens", type=int, default=1000, help="tokens in the Get pool")
    parser.add_argument(
        "--check-calls", type=int, default=200, help="checked Get calls per server (Python client)"
    )
    parser.add_argument(
        "--loadgen",
        choices=["auto", "h2load", "python"],
        default="auto",
        help="for Get and the bare servers' Upsert: h2load (installed if missing) or the "
        "Python client; auto: h2load if it can be had",
    )
    parser.add_argument("--h2load-procs", type=int, default=8, help="h2load processes per cell")
    parser.add_argument(
        "--h2load-connections",
        type=int,
        default=0,
        help="HTTP/2 connections per h2load cell, the calls in flight spread over them as "
        "streams (1: every call on one connection); default: one stream per connection",
    )
    parser.add_argument("--bare-threads", type=int, default=16, help="bare sync server's threads")
    parser.add_argument("--server-cpus", default="0", help="CPUs of a one-worker server")
    parser.add_argument("--loadgen-cpus", default="1", help="CPUs of the load generator")
    parser.add_argument(
        "--no-paired",
        dest="paired",
        action="store_false",
        help="do not alternate each real run with a run of a bare sync reference server",
    )
    parser.add_argument(
        "--reference",
        choices=("aio", "sync", "fastest"),
        default="aio",
        help="kind of the bare server each real run is paired with: the service's own (aio, "
        "since docs/decisions/0001), sync, or the faster of the two in this run",
    )
    parser.add_argument(
        "--db-cpus",
        default="",
        help="CPUs for the real server's PostgreSQL sessions (default: the load generator's; "
        "'none' leaves them where the kernel puts them)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the real server (repeatable), e.g. DB_POOL_SIZE=16",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run each real server with tracing on (OTLP/gRPC to a receiver that discards "
        "the spans); the untraced ones have every OTEL_* variable removed",
    )
    parser.add_argument(
        "--no-sealed",
        dest="sealed",
        action="store_false",
        help="skip real-1w-sealed: one worker with PROFILE_ENCRYPTION_KEYS, measured last, after "
        "`profile-service reencrypt` has sealed every seeded profile's limitations",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after real-1w's cells, sample it with py-spy (--gil) under concurrency 16 for "
        "SECONDS per RPC; writes bench/results/profile-*.txt (needs `pip install py-spy`)",
    )
    parser.add_argument(
        "--sched",
        choices=["batch", "default"],
        default="batch",
        help="scheduling policy of every server, bare and real alike (the service's SCHED_BATCH "
        "setting; default: batch, as the service runs by default)",
    )
    parser.add_argument("--database", default="profile_bench", help="bench database's name")
    parser.add_argument(
        "--keep-database", action="store_true", help="keep the bench database at the end"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 1.5, 0.5, 1
    args.repeat = max(1, args.repeat)
    args.db_cpus = args.db_cpus or args.loadgen_cpus
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.rpc = [r.strip().lower() for r in args.rpc.split(",") if r.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    bad = [r for r in args.rpc if r not in payloads.METHODS]
    bad += [t for t in args.targets if t not in (*TARGETS, *EXTRA_TARGETS, "real")]
    if bad or not args.concurrency or min(args.concurrency) < 1:
        parser.error(f"bad --rpc, --targets or --concurrency: {bad or args.concurrency}")
    return args
