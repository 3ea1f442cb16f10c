"""`python -m bench`: seed a database, start bare and real servers, load them, print the table.

See bench/README.md for what is measured and how. Everything started here is stopped at the
end, on Ctrl-C and on errors too; all traffic goes to 127.0.0.1.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import c_client, clients, database, h2load, payloads, procs, profiling, report, targets
from bench.options import RESULTS_DIR, parse_args
from bench.report import RPC_NAMES
from bench.targets import JWT_SECRET, Target, say
from devtools import database as devdb
from profile_service.auth import tokens


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the whole bench; 0 when every cell ran (errors are reported, not fatal), 1 if not."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    processes = procs.Processes()
    bench = Bench(args, processes)
    try:
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the bench started", file=sys.stderr)
        return 130
    except database.BenchBusy as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        processes.stop_all()
        bench.close()
    return 0 if bench.complete else 1


class Bench:
    """One run: database, servers, cells, report."""

    def __init__(self, args: argparse.Namespace, processes: procs.Processes) -> None:
        self.args = args
        self.processes = processes
        self.db: database.BenchDatabase | None = None
        self.lock: database.BenchLock | None = None
        self.h2load: h2load.H2Load | None = None
        # The C client's path, for calls that need a token each (None: the Python client).
        self.c_client: str | None = None
        self.cells: list[dict[str, Any]] = []
        self.targets: list[Target] = []
        self.complete = False
        self.tmp = Path(tempfile.mkdtemp(prefix="profile-bench-"))
        self.clients: clients.Clients
        self.logs = RESULTS_DIR / "logs"
        self.get_tokens: list[str] = []
        self.get_tokens_file = self.tmp / "get-tokens.txt"
        self.token_cursor = 0
        self.started_at = time.time()
        # The bare server kept running beside the real ones, for paired ceiling runs.
        self.reference: Target | None = None
        # The OTLP receiver of the traced servers (--tracing).
        self.otlp_sink: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        """Remove temporary files, and the database unless asked to keep it."""
        if self.h2load is not None:
            self.h2load.close()
        if self.lock is not None:
            self.lock.release()
        for path in self.tmp.glob("*"):
            path.unlink(missing_ok=True)
        self.tmp.rmdir()
        if self.db is not None and not self.args.keep_database:
            try:
                database.drop(self.db)
            except Exception as exc:  # the database may be what failed
                print(f"could not drop database {self.db.name}: {exc}", file=sys.stderr)

    # ---------------------------------------------------------------- set-up

    def run(self) -> None:
        """Everything, in order; prints progress to stderr and the table to stdout."""
        args = self.args
        machine = report.machine_facts()
        before = procs.cpu_busy()
        time.sleep(1.0)
        idle_busy = procs.busy_share(before, procs.cpu_busy())
        machine["busy_before_start"] = idle_busy
        say(
            f"machine: {machine['cpus']} CPUs ({machine['cpu_model']}), busy before the start: "
            + " ".join(f"{name} {share:.0%}" for name, share in sorted(idle_busy.items()))
        )
        if max(idle_busy.values(), default=0.0) > 0.2:
            say("  note: the machine is busy with other work; figures will be noisier")
        cpus = os.cpu_count() or 1
        if cpus < 2:
            say("  one CPU only: server and load generator share it")
            args.server_cpus = args.loadgen_cpus = args.db_cpus = "0"
        self.clients = clients.Clients(self.processes, args.loadgen_cpus, self.tmp)
        self.logs.mkdir(parents=True, exist_ok=True)
        gen = self._load_generator()
        self.c_client = self._token_client()
        self.lock = database.BenchLock(devdb.admin_url())
        say(f"database: preparing {args.database} with {args.profiles:,} profiles")
        self.db = database.prepare(args.database, args.profiles)
        say(f"  ready in {self.db.seconds:.1f}s (PostgreSQL {self.db.server_version()})")
        self._mint_get_tokens()
        otlp_port = self._start_otlp_sink() if args.tracing else 0
        self.targets = targets.plan(
            self.args, targets.server_env(self.args, self.db.service_url), otlp_port
        )
        failure: BaseException | None = None
        try:
            for target in self.targets:
                if target.kind == "real" and self.reference is None and args.paired:
                    self._start_reference(gen)
                self._bench_target(target, gen)
            self.complete = True
        except Exception as exc:  # report what was measured, then fail
            failure = exc
        otlp = self._stop_otlp_sink()
        report.add_ratios(self.cells)
        summary = report.summary(self.cells, self.targets_facts())
        result = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_at)),
            "seconds": round(time.time() - self.started_at, 1),
            "machine": {**machine, "load_at_end": list(os.getloadavg())},
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "concurrency": args.concurrency,
                "profiles": args.profiles,
                "get_tokens": len(self.get_tokens),
                "loadgen_for_get": gen,
                "loadgen_for_upsert": "c-h2" if self.c_client else "py-aio",
                "repeat": args.repeat,
                "server_cpus": args.server_cpus,
                "loadgen_cpus": args.loadgen_cpus,
                "db_cpus": args.db_cpus,
                "paired": self.reference is not None,
                "sched": args.sched,
                "server_env": args.server_env,
            },
            "targets": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "cpus": t.cpus,
                    "workers": t.workers,
                    "note": t.note,
                    **t.facts,
                }
                for t in self.targets
            ],
            "complete": self.complete,
            "otlp_sink": otlp,
            "cells": self.cells,
            "summary": summary,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(report.table(self.cells))
        print()
        for line in summary["lines"]:
            print(line)
        for t in self.targets:
            if t.note:
                print(f"note: {t.name}: {t.note}")
        print(f"\nJSON: {args.output}  (server logs: {self.logs})")
        if failure is not None:
            print(f"\nthe run stopped early: {type(failure).__name__}: {failure}", file=sys.stderr)
            raise failure

    def _start_otlp_sink(self) -> int:
        """The OTLP receiver of the traced servers, on the load generator's CPUs."""
        port = procs.free_port()
        log = self.logs / "otlp-sink.log"
        self.otlp_sink = self.processes.start(
            targets.otlp_sink_command(port), cpus=self.args.loadgen_cpus, log=log
        )
        say(f"otlp-sink: receiving spans on 127.0.0.1:{port}, CPUs {self.args.loadgen_cpus}")
        return port

    def _stop_otlp_sink(self) -> dict[str, Any] | None:
        """Stop the receiver; what it received (export calls, spans), from its last line."""
        if self.otlp_sink is None:
            return None
        self.processes.stop(self.otlp_sink)
        self.otlp_sink = None
        lines = (self.logs / "otlp-sink.log").read_text(errors="replace").splitlines()
        try:
            counts: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):  # it died before saying
            counts = {"error": lines[-1] if lines else "no output"}
        say(f"otlp-sink: received {counts}")
        return counts

    def targets_facts(self) -> dict[str, dict[str, Any]]:
        """What each target's run found, by name."""
        return {t.name: {"workers": t.workers, "note": t.note, **t.facts} for t in self.targets}

    def _load_generator(self) -> str:
        if self.args.loadgen == "python":
            return "python"
        exe = h2load.find()
        if exe is None:
            if self.args.loadgen == "h2load":
                raise SystemExit(f"h2load is not installed: {h2load.INSTALL_HINT}")
            say(
                f"  h2load unavailable ({h2load.INSTALL_HINT}): the Python client drives every cell"
            )
            return "python"
        self.h2load = h2load.H2Load(exe, self.args.loadgen_cpus, self.processes)
        return "h2load"

    def _token_client(self) -> str | None:
        """The C client for token-per-call cells, built if need be; None: the Python one."""
        if self.args.loadgen == "python":
            return None
        exe, how = c_client.build()
        if exe is None:
            say(f"  C client unavailable ({how}): the Python client drives Upsert")
        return exe

    def _mint_get_tokens(self) -> None:
        """The Get pool: users whose profiles were seeded, chosen at random (fixed seed)."""
        assert self.db is not None
        chooser = random.Random(5)  # noqa: S311 - picking rows, not secrets
        count = min(self.args.get_tokens, self.db.profiles)
        owners = chooser.sample(range(1, self.db.profiles + 1), count)
        self.get_tokens = [
            tokens.mint(
                JWT_SECRET, role="authenticated", sub=payloads.seeded_owner(n), ttl_seconds=7200
            )
            for n in owners
        ]
        self.get_tokens_file.write_text("\n".join(self.get_tokens) + "\n")

    def _bench_target(self, target: Target, gen: str) -> None:
        args = self.args
        target.port = procs.free_port()
        if target.kind == "real":
            command = target.command
            env: dict[str, str] | None = {**(target.env or {}), "GRPC_PORT": str(target.port)}
        else:
            command = [*target.command, "--port", str(target.port)]
            env = None
        log = self.logs / f"{target.name}.log"
        if target.before:
            self._run_before(target)
        say(f"{target.name}: starting on 127.0.0.1:{target.port}, CPUs {target.cpus}")
        server = self.processes.start(command, cpus=target.cpus, env=env, log=log)
        try:
            self._wait_ready(target, server, log)
            if target.pin_workers:
                self._pin_workers(target, server)
            self._check_get(target)
            for rpc in args.rpc:
                for concurrency in args.concurrency:
                    self._cell(target, server, rpc, concurrency, gen)
            if args.profile > 0 and target.name == "real-1w":
                for rpc in args.rpc:
                    self._profile(target, server, rpc, gen)
        finally:
            code = self.processes.stop(server)
            target.facts["exit_code"] = code
            if target.kind == "real" and code != 0:
                target.note = (target.note + "; " if target.note else "") + (
                    f"exited with {code} after SIGTERM (see {log})"
                )

    def _run_before(self, target: Target) -> None:
        """The target's preparing command, timed (it must succeed); then the rows it rewrote
        are vacuumed."""
        say(f"{target.name}: {' '.join(target.before[-2:])}")
        started = time.monotonic()
        done = subprocess.run(
            target.before, env=target.env, capture_output=True, text=True, timeout=3600, check=False
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"{target.before} failed: {done.stderr.strip()[-500:]}")
        target.facts["before"] = {"output": done.stdout.strip(), "seconds": round(seconds, 2)}
        say(f"  {done.stdout.strip()} ({seconds:.1f}s)")
        assert self.db is not None
        self.db.vacuum()

    def _start_reference(self, gen: str) -> None:
        """Start the bare server that each real run is paired with (h2load only).

        The machine's speed drifts by more than the service's optimisations (other guests on
        the host): a ceiling measured minutes before the real server can be 20 % off. So every
        real run is preceded by a run of the same RPC and concurrency on this reference, on the
        same CPUs, and the real cell's ratio is to the fastest of those paired runs. It idles
        while the real server is loaded.
        """
        if gen != "h2load":
            return
        kind = self.args.reference
        if kind == "fastest":  # sync, unless this run measured aio faster
            best = {
                k: max((c["rps"] for c in self.cells if c["target"] == f"bare-{k}"), default=0)
                for k in ("sync", "aio")
            }
            kind = "aio" if best["aio"] > best["sync"] else "sync"
        threads = ["--threads", str(self.args.bare_threads)] if kind == "sync" else []
        reference = Target(
            name=f"bare-{kind}-reference",
            kind="bare",
            command=[
                sys.executable,
                "-m",
                "bench.bare_server",
                "--kind",
                kind,
                *threads,
                *targets.bare_flags(self.args),
            ],
            cpus=self.args.server_cpus,
            port=procs.free_port(),
        )
        log = self.logs / f"{reference.name}.log"
        command = [*reference.command, "--port", str(reference.port)]
        say(f"{reference.name}: starting on 127.0.0.1:{reference.port}, CPUs {reference.cpus}")
        server = self.processes.start(command, cpus=reference.cpus, log=log)
        self._wait_ready(reference, server, log)
        reference.facts["pid"] = server.pid
        self.reference = reference

    def _wait_ready(self, target: Target, server: "subprocess.Popen[bytes]", log: Path) -> None:
        address = f"127.0.0.1:{target.port}"

        def ready() -> bool:
            if server.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"{target.name} exited with {server.returncode}:\n{tail}")
            with grpc.insecure_channel(address) as channel:
                try:
                    if target.kind == "bare":
                        grpc.channel_ready_future(channel).result(timeout=0.5)
                        return True
                    answer = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=payloads.SERVICE), timeout=0.5
                    )
                    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
                except (grpc.RpcError, grpc.FutureTimeoutError):
                    return False

        procs.wait_until(ready, 60, target.name)

    def _pin_workers(self, target: Target, server: "subprocess.Popen[bytes]") -> None:
        cpus = sorted(os.sched_getaffinity(0))
        found: list[int] = []

        def all_up() -> bool:
            found[:] = procs.spawned_workers(server.pid)
            return len(found) >= target.workers

        procs.wait_until(all_up, 30, f"{target.name} workers")
        time.sleep(1.0)  # their gRPC threads start after the process does
        pinned = {}
        for i, pid in enumerate(procs.spawned_workers(server.pid)):
            procs.pin_threads(pid, cpus[i % len(cpus)])
            pinned[str(pid)] = cpus[i % len(cpus)]
        target.facts["pinned_workers"] = pinned
        say(f"  pinned workers (pid: cpu): {pinned}")

    def _check_get(self, target: Target) -> None:
        """Distinct users' Get calls through the Python client, every status checked."""
        count = min(self.args.check_calls, len(self.get_tokens))
        if count <= 0:
            return
        path = self.tmp / "check-tokens.txt"
        path.write_text("\n".join(self.get_tokens[:count]) + "\n")
        result = self.clients.python(
            target.port, "get", min(8, count), calls=count, tokens_file=str(path)
        )
        target.facts["get_check"] = {
            "calls": result["calls"],
            "distinct_tokens": count,
            "errors": result["errors"],
            "error_codes": result["error_codes"],
        }
        state = "OK" if result["errors"] == 0 else f"{result['errors']} NOT OK"
        say(f"  check: {result['calls']} Get calls with {count} distinct users' tokens: {state}")

    def _next_get_tokens(self, count: int) -> list[str]:
        chosen = []
        for _ in range(count):
            chosen.append(self.get_tokens[self.token_cursor % len(self.get_tokens)])
            self.token_cursor += 1
        return chosen

    def _answer_bytes(self, target: Target, rpc: str, token: str) -> int:
        """One checked call: the framed size of the OK answer this token gets."""
        with grpc.insecure_channel(f"127.0.0.1:{target.port}") as channel:
            call: Any = channel.unary_unary(payloads.METHODS[rpc])
            answer = call(
                payloads.REQUESTS[rpc](),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=payloads.CALL_TIMEOUT_SECONDS,
            )
        return len(payloads.grpc_frame(answer))

    def _cell(
        self,
        target: Target,
        server: "subprocess.Popen[bytes]",
        rpc: str,
        concurrency: int,
        gen: str,
    ) -> None:
        runs: list[str] = []
        if rpc == "get" or rpc in payloads.IDS_PER_CALL:
            if gen != "h2load" and rpc != "get":
                say(f"  {rpc}: h2load only (the Python client does not batch); skipped")
                return
            runs.append(gen)
        elif target.kind == "real":
            runs.append("tokens")  # distinct owners need a token per call
        else:
            # The bare servers read no token, so h2load's one-token-per-process costs them
            # nothing: the h2load figure is the ceiling. The token client's figure on the
            # sync server shows what that client can drive (is the real Upsert client-bound?).
            runs.append(gen)
            if gen == "h2load" and target.name == "bare-sync":
                runs.append("tokens")
        for loadgen in runs:
            results = []
            paired: list[dict[str, Any]] = []
            for _ in range(self.args.repeat):
                if target.kind == "real" and self.reference is not None:
                    ref = self.reference
                    meter = procs.Meter(int(ref.facts["pid"]))
                    paired.append(self._h2load_cell(ref, rpc, concurrency, meter))
                if target.kind == "real":
                    self._pin_database_sessions(target)
                meter = procs.Meter(server.pid)
                if loadgen == "h2load":
                    results.append(self._h2load_cell(target, rpc, concurrency, meter))
                else:
                    results.append(self._token_cell(target, rpc, concurrency, meter))
            # The best run, as timeit takes the fastest: on a virtual machine, slower runs are
            # mostly other guests taking the CPUs (steal), and bare and real are treated alike.
            result = max(results, key=lambda r: float(r["rps"]))
            cell = {
                "target": target.name,
                "kind": target.kind,
                "workers": target.workers,
                "rpc": rpc,
                "concurrency": concurrency,
                "loadgen": self._loadgen_label(loadgen, rpc),
                **result,
                # Errors count in every run, not only the best one.
                "errors": sum(int(r["errors"]) for r in results),
                "runs_rps": [round(float(r["rps"]), 1) for r in results],
            }
            if paired:
                assert self.reference is not None
                cell["paired_ceiling_target"] = self.reference.name.removesuffix("-reference")
                cell["paired_ceiling_rps"] = max(float(r["rps"]) for r in paired)
                cell["paired_ceiling_runs_rps"] = [round(float(r["rps"]), 1) for r in paired]
                cell["paired_ceiling_errors"] = sum(int(r["errors"]) for r in paired)
            self.cells.append(cell)
            say("  " + report.progress_line(cell))
            if (anatomy := report.anatomy_line(cell)) is not None:
                say("  " + anatomy)

    def _pin_database_sessions(self, target: Target) -> None:
        """Put the real server's PostgreSQL sessions on --db-cpus, so that a one-worker server
        has its CPU to itself, as the bare servers do. Repeated before every run: a session
        the pool reopened starts wherever the kernel puts it."""
        if self.args.db_cpus == "none" or self.db is None:
            return
        if set(target.cpus.split(",")) & set(self.args.db_cpus.split(",")):
            # The server spans those CPUs itself (several workers): the kernel places them.
            target.facts["db_sessions_pinned"] = "no: the server uses the database's CPUs"
            return
        try:
            pinned = procs.pin(self.db.session_pids(), self.args.db_cpus, expect="postgres")
        except OSError as exc:  # not root, or not this machine's PostgreSQL
            say(f"  PostgreSQL's sessions left unpinned: {exc}")
            target.facts["db_sessions_pinned"] = f"no: {exc}"
            self.args.db_cpus = "none"
            return
        if "db_cpus" not in target.facts:
            target.note = (target.note + "; " if target.note else "") + (
                f"its PostgreSQL sessions pinned to CPUs {self.args.db_cpus} (--db-cpus)"
            )
        target.facts["db_sessions_pinned"] = pinned
        target.facts["db_cpus"] = self.args.db_cpus

    def _profile(
        self, target: Target, server: "subprocess.Popen[bytes]", rpc: str, gen: str
    ) -> None:
        """Sample the server with py-spy while loading it; not a measurement (py-spy costs)."""
        spy = profiling.find_py_spy()
        if spy is None:
            say("  profile skipped: py-spy not found (pip install py-spy)")
            return
        seconds = self.args.profile
        raw = RESULTS_DIR / f"profile-{target.name}-{rpc}.txt"
        recorder = self.processes.start(
            profiling.record_command(spy, server.pid, seconds + 1, raw), capture=True
        )
        time.sleep(0.5)  # let py-spy attach before the load starts
        meter = procs.Meter(server.pid)
        saved = self.args.warmup, self.args.duration
        self.args.warmup, self.args.duration = 0.0, seconds
        try:
            if rpc == "get" and gen == "h2load":
                result = self._h2load_cell(target, rpc, 16, meter)
            else:
                result = self._token_cell(target, rpc, 16, meter)
        finally:
            self.args.warmup, self.args.duration = saved
        out, _ = recorder.communicate(timeout=seconds + 60)
        self.processes.forget(recorder)
        if recorder.returncode != 0 or not raw.exists():
            say(f"  profile failed: {out.decode(errors='replace')[-500:]}")
            return
        summary = profiling.summarize(raw)
        text = RESULTS_DIR / f"profile-{target.name}-{rpc}-summary.txt"
        text.write_text(summary)
        target.facts.setdefault("profiles", {})[rpc] = {
            "raw": str(raw),
            "summary": str(text),
            "rps_while_profiled": result["rps"],
        }
        say(f"  profile of {RPC_NAMES[rpc]} at c=16 ({result['rps']:,.0f}/s under py-spy):")
        say(summary)

    def _h2load_cell(
        self, target: Target, rpc: str, concurrency: int, meter: procs.Meter
    ) -> dict[str, Any]:
        assert self.h2load is not None
        connections = self.args.h2load_connections
        if connections:  # the calls in flight as streams over that many connections
            shares = h2load.split(connections, self.args.h2load_procs)
            per_connection = max(1, concurrency // connections)
        else:
            shares, per_connection = h2load.split(concurrency, self.args.h2load_procs), 1
        streams = []
        if rpc in payloads.IDS_PER_CALL:  # service_role's reads across users
            service = tokens.mint(JWT_SECRET, role="service_role", ttl_seconds=3600)
            call_tokens = [service] * len(shares)
        else:
            call_tokens = self._next_get_tokens(len(shares))
        for token, share in zip(call_tokens, shares, strict=True):
            size = self._answer_bytes(target, rpc, token)
            streams.append(h2load.Stream(token, size, share, per_connection))
        return self.h2load.cell(
            target.port, rpc, streams, self.args.warmup, self.args.duration, meter
        )

    def _loadgen_label(self, loadgen: str, rpc: str) -> str:
        """The table's name for a cell's load generator: h2load, c-h2 (bench/h2_client.c) or
        py-aio (bench/client.py), as `_token_cell` picks them."""
        if loadgen == "h2load":
            return "h2load"
        return "c-h2" if self.c_client and rpc != "get" else "py-aio"

    def _token_cell(
        self, target: Target, rpc: str, concurrency: int, meter: procs.Meter
    ) -> dict[str, Any]:
        """A cell where every call carries its own token (the C or the Python client)."""
        args = self.args
        if rpc == "get":
            return self.clients.python(
                target.port,
                rpc,
                concurrency,
                warmup=args.warmup,
                duration=args.duration,
                tokens_file=str(self.get_tokens_file),
                meter=meter,
            )
        # Upsert: a fresh user per call. Tokens are minted before the clock starts, as many
        # as this cell can use: the Get rate of the same server and concurrency bounds it.
        get_rate = next(
            (
                c["rps"]
                for c in self.cells
                if c["target"] == target.name and c["rpc"] == "get"
                if c["concurrency"] == concurrency
            ),
            8000.0,
        )
        mint = int(max(get_rate, 500.0) * 1.3 * (args.warmup + args.duration)) + 500
        rows_before = self.db.count() if target.kind == "real" and self.db else None
        if self.c_client is not None:
            result = self.clients.c(
                self.c_client,
                target.port,
                rpc,
                concurrency,
                mint,
                args.warmup,
                args.duration,
                meter,
            )
        else:
            result = self.clients.python(
                target.port,
                rpc,
                concurrency,
                warmup=args.warmup,
                duration=args.duration,
                mint=mint,
                meter=meter,
            )
        if rows_before is not None and self.db is not None:
            # Every OK Upsert of a new owner creates a row; warm-up calls count here too.
            result["rows_created"] = self.db.count() - rows_before
        return result
