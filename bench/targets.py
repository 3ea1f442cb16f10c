"""The servers the bench measures: what each is, how it is started, with what environment."""

import argparse
import base64
import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

# A development-only signing secret: the bench's server accepts tokens minted with it.
JWT_SECRET = "bench-only-secret-not-for-any-real-deployment"  # noqa: S105
# What the real server inherits from us must not change how it verifies tokens.
_DROPPED_ENV = (
    "DATABASE_URL",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
    "JWT_ALGORITHM",
    "JWT_AUDIENCE",
    "WORKERS",
)


@dataclass
class Target:
    """A server under load: how to start it, where it runs, and what is known about it."""

    name: str
    kind: str  # "bare" or "real"
    command: list[str]
    cpus: str
    workers: int = 1
    pin_workers: bool = False
    env: dict[str, str] | None = None
    note: str = ""
    port: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    # A command run (with `env`) before the server starts, its output kept in `facts`.
    before: list[str] = field(default_factory=list)


def plan(args: argparse.Namespace, server_env: dict[str, str], otlp_port: int = 0) -> list[Target]:
    """The servers to measure, in order: bare ones, then the real one per worker count (each
    followed by its traced twin, exporting to 127.0.0.1:`otlp_port`, with --tracing)."""
    python = sys.executable
    planned = []
    # The bare servers: gRPC's ceiling (sync, aio on asyncio's loop and on uvloop), and aio with
    # one PostgreSQL round trip a call on the service's loop (bench/bare_server.py).
    service_loop = server_env.get("EVENT_LOOP", "uvloop")
    bare = {
        "bare-sync": ["--kind", "sync", "--threads", str(args.bare_threads)],
        "bare-aio": ["--kind", "aio"],
        "bare-aio-uvloop": ["--kind", "aio", "--uvloop"],
        "bare-aio-yield": ["--kind", "aio-yield", "--uvloop"],
        "bare-aio-io": [
            "--kind",
            "aio-io",
            "--database-url",
            server_env["DATABASE_URL"],
            *(["--uvloop"] if service_loop == "uvloop" else []),
        ],
    }
    for name, flags in bare.items():
        if name in args.targets:
            command = [python, "-m", "bench.bare_server", *flags, *bare_flags(args)]
            planned.append(Target(name=name, kind="bare", command=command, cpus=args.server_cpus))
    if "real" not in args.targets:
        return planned
    serve = [python, "-m", "profile_service", "serve"]
    has_workers = "--workers" in _serve_help(serve)
    all_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    for workers in args.workers:
        if workers > 1 and not has_workers:
            say(f"real-{workers}w skipped: `profile-service serve --help` has no --workers")
            continue
        target = Target(
            name=f"real-{workers}w",
            kind="real",
            command=serve + (["--workers", str(workers)] if has_workers else []),
            cpus=args.server_cpus if workers == 1 else all_cpus,
            workers=workers,
            env=server_env,
        )
        if workers > 1:
            target.note = (
                f"{workers} workers on CPUs {all_cpus}, which the load generator "
                f"(CPUs {args.loadgen_cpus}) and PostgreSQL share"
            )
        planned.append(target)
        if args.tracing:
            planned.append(traced(target, otlp_port))
        if workers > 1 and args.pin_workers:
            planned.append(
                dataclasses.replace(
                    target,
                    name=f"real-{workers}w-pinned",
                    pin_workers=True,
                    note=f"{workers} workers, worker i pinned to CPU i (all its threads); "
                    f"the load generator (CPUs {args.loadgen_cpus}) and PostgreSQL share them",
                    facts={},
                )
            )
    one_worker = next((t for t in planned if t.name == "real-1w"), None)
    if args.sealed and one_worker is not None:
        planned.append(sealed(one_worker))  # last: its reencrypt seals the seeded rows for good
    return planned


# A bench-only key (random per run would do as well; fixed, runs compare like with like).
_BENCH_KEY = "bench:" + base64.b64encode(b"bench-only-key-not-for-real-use!").decode()


def sealed(target: Target) -> Target:
    """`target` with PROFILE_ENCRYPTION_KEYS set, after `profile-service reencrypt` has sealed
    every seeded limitations: each Get opens one sealed value, each Upsert seals one."""
    return _twin(
        target,
        "sealed",
        {"PROFILE_ENCRYPTION_KEYS": _BENCH_KEY},
        "limitations sealed at rest (AES-256-GCM), every row",
        before=[*target.command[: target.command.index("serve")], "reencrypt"],
    )


def traced(target: Target, otlp_port: int) -> Target:
    """`target` with tracing on: every call's spans batched and exported over OTLP/gRPC, as in
    production, to a receiver (devtools.otlp_sink) that parses and discards them. Not
    OTEL_TRACES_EXPORTER=none: that turns tracing off, and an exporter that drops spans
    in-process would hide the batching thread's and the export's share of the GIL."""
    return _twin(
        target,
        "traced",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        },
        "tracing on: 2 spans a call, exported over OTLP/gRPC to a discarding receiver",
    )


def _twin(
    target: Target, suffix: str, env: dict[str, str], note: str, before: list[str] | None = None
) -> Target:
    """`target` again, named `<name>-<suffix>`, with `env` added and `note` said."""
    return dataclasses.replace(
        target,
        name=f"{target.name}-{suffix}",
        env={**(target.env or {}), **env},
        note=f"{target.note}; {note}" if target.note else note,
        facts={},
        before=before or [],
    )


def otlp_sink_command(port: int) -> list[str]:
    """The OTLP receiver the traced servers export to (it prints its counts when stopped)."""
    return [sys.executable, "-m", "devtools.otlp_sink", "--port", str(port)]


def bare_flags(args: argparse.Namespace) -> list[str]:
    """The bare servers run under the same scheduling policy as the real one."""
    return ["--sched-batch"] if args.sched == "batch" else []


def server_env(args: argparse.Namespace, service_url: str) -> dict[str, str]:
    """The real server's environment: the bench database, the bench secret, --server-env."""
    # No OTEL_* from our environment: tracing is on only where the bench turns it on.
    env = {
        k: v for k, v in os.environ.items() if k not in _DROPPED_ENV and not k.startswith("OTEL_")
    }
    env.update(
        DATABASE_URL=service_url,
        JWT_SECRET=JWT_SECRET,
        SHUTDOWN_GRACE_SECONDS="5",
        # Any free port: a fixed one (the default 9090) may be taken by `make run`.
        METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
        SCHED_BATCH="true" if args.sched == "batch" else "false",
    )
    for item in args.server_env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


# ---------------------------------------------------------------- one server


def _serve_help(serve: list[str]) -> str:
    done = subprocess.run(
        [*serve, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout + done.stderr


def say(text: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(text, file=sys.stderr, flush=True)
