"""`python -m bench.scale` (`make bench-scale`): the service as the work grows.

1. Size: Get at concurrency 16, owners drawn at random, on BASE rows, then on SCALE_ROWS.
2. Purge under load: a tenth of SCALE_ROWS soft-deleted long ago, purged by the real
   `profile-service purge` while Get runs at 16 in flight and Upsert at a steady rate; the lock
   waits seen in pg_stat_activity meanwhile; dead tuples and size after.
3. Soak: SOAK Gets and a tenth as many Upserts through one worker, random owners,
   PROFILE_ENCRYPTION_KEYS set; the worker's RSS, open files and pool sampled throughout.
4. The soak again beside 1,000 stalled calls (bench/stalled.py).

SCALE_ROWS (default 10,000,000) sizes it all; the soak is 1,000,000 Gets at 10M rows and
scales with it (at least 20,000). SCALE_SECONDS (30) is each Get window, SCALE_PURGE_BATCHES
(1000,5000) the purge trials, SCALE_PARTS (size,purge,soak,stalled) what runs. One worker on
CPU 0; the load generators, PostgreSQL and the stalled callers on CPU 1. Each goal's figure,
target and verdict go to bench/results/scale.json and to stdout; the story is in
bench/README.md ("Scale").
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import database, procs, report
from bench.options import RESULTS_DIR
from bench.targets import JWT_SECRET, say
from profile_service.auth import tokens

_CLI = str(Path(sys.executable).parent / "profile-service")
_KEYS = "scale:" + "c2NhbGUtYmVuY2gtb25seS1rZXktbm90LXJlYWwtMzI="  # 32 bytes, bench only
_SERVER_CPU, _LOAD_CPU = "0", "1"
_FULL = 10_000_000


@dataclass(frozen=True)
class Plan:
    """How big each part is."""

    rows: int
    base_rows: int
    purge_rows: int
    soak_gets: int
    soak_upserts: int
    stalled: int
    seconds: float  # per measured Get window
    upsert_rate: float  # Upserts a second beside the Gets (purge phase)
    purge_batches: tuple[int, ...]  # a purge trial per batch size, the default first
    autovacuum_wait: float  # how long to wait for autovacuum after the purges
    parts: tuple[str, ...]  # which of size, purge, soak, stalled to run (size always grows)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Plan":
        """SCALE_ROWS, and the rest in proportion to it."""
        rows = int(env.get("SCALE_ROWS", _FULL))
        soak = max(20_000, 1_000_000 * rows // _FULL)
        return cls(
            rows=rows,
            base_rows=min(100_000, rows),
            purge_rows=max(10_000, rows // 10),
            soak_gets=soak,
            soak_upserts=soak // 10,
            stalled=1000,
            seconds=float(env.get("SCALE_SECONDS", "30")),
            upsert_rate=100.0,
            purge_batches=tuple(
                int(b) for b in env.get("SCALE_PURGE_BATCHES", "1000,5000").split(",") if b
            ),
            autovacuum_wait=float(env.get("SCALE_AUTOVACUUM_WAIT", "120")),
            parts=tuple(env.get("SCALE_PARTS", "size,purge,soak,stalled").split(",")),
        )


@dataclass
class Goal:
    """One goal: what was measured against what was asked."""

    name: str
    measured: float
    target: str
    met: bool
    unit: str = ""


class Scale:
    """One run, its server and what it measured."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.processes = procs.Processes()
        self.tmp = Path(tempfile.mkdtemp(prefix="profile-scale-"))
        self.logs = RESULTS_DIR / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.goals: list[Goal] = []
        self.facts: dict[str, Any] = {}
        self.db: database.BenchDatabase | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        """All four parts, in order."""
        plan = self.plan
        started = time.monotonic()
        say(f"seeding {plan.base_rows:,} profiles")
        self.db = database.prepare("profile_scale", plan.base_rows)
        self.facts["seed_base_seconds"] = round(self.db.seconds, 1)
        self._start_server()
        self._size()  # always: it grows the table the other parts run on
        if "purge" in plan.parts:
            self._purge_under_load()
        if "soak" in plan.parts:
            self._soak("soak", stalled=0)
        if "stalled" in plan.parts:
            self._soak("soak_stalled", stalled=plan.stalled)
        self.facts["seconds"] = round(time.monotonic() - started, 1)
        return {
            "plan": asdict(plan),
            "machine": report.machine_facts(),
            "facts": self.facts,
            "goals": [asdict(g) for g in self.goals],
        }

    def close(self) -> None:
        """Stop every process; drop the database and the spec files."""
        self.processes.stop_all()
        if self.db is not None:
            database.drop(self.db)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ 1. size

    def _size(self) -> None:
        plan = self.plan
        base = self._gets(plan.base_rows, "get_base")
        say(f"growing to {plan.rows:,} profiles")
        seconds = self._sql_timed(database.SEED_RANGE, (plan.base_rows + 1, plan.rows), vacuum=True)
        self.facts["seed_seconds"] = round(seconds + self.db_.seconds, 1)
        self.facts["size_after_seed"] = self._sizes()
        say(f"  {seconds:.0f}s; {self.facts['size_after_seed']}")
        big = self._gets(plan.rows, "get_big")
        ratio = big["p99_ms"] / base["p99_ms"]
        self._goal("Get p99 at full size / at base", ratio, "<= 1.2", ratio <= 1.2, "x")
        share = big["rps"] / base["rps"]
        self._goal("Get throughput at full size / at base", share, ">= 0.9", share >= 0.9, "x")

    def _gets(self, owners: int, name: str, **extra: Any) -> dict[str, Any]:
        before = self._blocks()
        result = self._client(
            {"rpc": "get", "concurrency": 16, "owners": owners, "warmup": 2.0}
            | {"duration": self.plan.seconds}
            | extra
        )
        hits, reads = (now - then for now, then in zip(self._blocks(), before, strict=True))
        # How often a page the window needed was in shared_buffers (else the kernel's cache).
        result["buffer_hit_ratio"] = round(hits / max(1, hits + reads), 4)
        self.facts[name] = {**_brief(result), "buffer_hit_ratio": result["buffer_hit_ratio"]}
        rps, p99, errors = result["rps"], result["p99_ms"], result["errors"]
        say(
            f"  {name}: {rps:,.0f}/s, p99 {p99:.2f} ms, errors {errors}, "
            f"buffer hits {result['buffer_hit_ratio']:.1%}"
        )
        return result

    def _blocks(self) -> tuple[int, int]:
        """The database's shared-buffer hits and reads so far."""
        with psycopg.connect(self.db_.admin_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT blks_hit, blks_read FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    # ------------------------------------------------------------------ 2. purge

    def _purge_under_load(self) -> None:
        plan = self.plan
        # Without a purge: the same load, to compare with.
        idle = self._with_upserts(lambda: self._gets(plan.rows, "get_beside_upserts"))
        trials = []
        for batch in plan.purge_batches:
            trial = self._purge_trial(batch)
            trial["get_p99_vs_without"] = round(trial["get_p99_ms"] / idle["p99_ms"], 3)
            trials.append(trial)
        self.facts["purge_trials"] = trials
        for trial in trials:
            name = f"purge, batch {trial['batch']:,}"
            rate, ratio = trial["rows_per_s"], trial["get_p99_vs_without"]
            self._goal(f"{name}: rows/s", rate, ">= 20000", rate >= 20_000, "rows/s")
            if trial["get_calls"]:
                self._goal(f"{name}: Get p99 during / without", ratio, "<= 2", ratio <= 2.0, "x")
            else:  # a small SCALE_ROWS: the purge ended within the Gets' warm-up
                self._goal(f"{name}: Get p99 during (purge too short to measure)", 0, "<= 2", False)
            longest, batch_ms = trial["lock_waits"]["longest_ms"], trial["batch_ms"]
            self._goal(
                f"{name}: longest lock wait / one batch ({batch_ms:.0f} ms)",
                longest / batch_ms,
                "<= 1",
                longest <= batch_ms,
                "x",
            )
        self.facts["after_purges"] = self._sizes()
        self.facts["autovacuum"] = self._autovacuum()

    def _purge_trial(self, batch: int) -> dict[str, Any]:
        """Soft-delete purge_rows profiles long ago, then purge them with `batch` rows a
        transaction while Gets and Upserts run."""
        plan = self.plan
        say(f"purge, batch {batch:,}: soft-deleting {plan.purge_rows:,} profiles long ago")
        first = plan.rows + 1
        seconds = self._sql_timed(
            database.SEED_DELETED_RANGE, (first, plan.rows + plan.purge_rows), vacuum=True
        )
        stop_file = self.tmp / f"purge-{batch}-done"
        waits = _LockWatcher(self.db_.admin_url)
        waits.start()
        purge: dict[str, Any] = {}
        token = tokens.mint(JWT_SECRET, role="service_role", ttl_seconds=7200)
        command = [_CLI, "purge", "--target", f"127.0.0.1:{self.port}", "--token", token]
        command += ["--retention-days", "30", "--batch-size", str(batch), "--timeout", "3600"]

        def run_purge() -> None:
            began = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            purge.update(
                seconds=time.monotonic() - began, code=done.returncode, out=done.stdout.strip()
            )
            stop_file.touch()

        thread = threading.Thread(target=run_purge)
        # The Gets start first (their warm-up), the purge as the measured window opens.
        timer = threading.Timer(2.0, thread.start)
        timer.start()
        during = self._with_upserts(
            lambda: self._gets(
                plan.rows, f"get_during_purge_{batch}", duration=3600.0, stop_file=str(stop_file)
            ),
            stop_file=str(stop_file),
        )
        timer.join()
        thread.join()
        waits.stop()
        if purge.get("code") != 0:
            raise RuntimeError(f"purge failed: {purge}")
        purged = int(purge["out"])
        rate = purged / purge["seconds"]
        say(f"  purged {purged:,} in {purge['seconds']:.1f}s = {rate:,.0f} rows/s")
        return {
            "batch": batch,
            "seed_deleted_seconds": round(seconds, 1),
            "rows": purged,
            "seconds": round(purge["seconds"], 2),
            "rows_per_s": round(rate),
            "batch_ms": round(1000 * purge["seconds"] / max(1, -(-purged // batch)), 1),
            "get_p99_ms": during["p99_ms"],
            "get_calls": during["calls"],
            "get_rps": round(during["rps"]),
            "lock_waits": waits.summary(),
            "upserts": during["upserts"],
            "after": self._sizes(),
        }

    def _autovacuum(self) -> dict[str, Any]:
        """Wait (up to plan.autovacuum_wait) for autovacuum to visit the table after the purges;
        the table then, and whether it came (else a manual VACUUM, said so). A server with
        autovacuum off gets the VACUUM at once."""
        query = (
            "SELECT autovacuum_count FROM pg_stat_user_tables"
            " WHERE relid = 'profile.profiles'::regclass"
        )
        with psycopg.connect(self.db_.admin_url, autocommit=True) as conn:
            setting = conn.execute("SHOW autovacuum").fetchone()
            if setting is None or setting[0] != "on":
                conn.execute("VACUUM profile.profiles")
                return {"autovacuum_on": False, "autovacuum_came": False, **self._sizes()}
            before = conn.execute(query).fetchone()
            deadline = time.monotonic() + self.plan.autovacuum_wait
            came = False
            while time.monotonic() < deadline and not came:
                time.sleep(2)
                came = conn.execute(query).fetchone() != before
            waited = self.plan.autovacuum_wait - max(0.0, deadline - time.monotonic())
            if not came:
                conn.execute("VACUUM profile.profiles")
        return {
            "autovacuum_on": True,
            "autovacuum_came": came,
            "waited_s": round(waited),
            **self._sizes(),
        }

    def _with_upserts(
        self, gets: Callable[[], dict[str, Any]], stop_file: str = ""
    ) -> dict[str, Any]:
        """`gets()` with Upserts of random owners at the plan's steady rate beside it."""
        spec = {
            "rpc": "upsert",
            "concurrency": 4,
            "owners": self.plan.rows,
            "mint": 5000,
            "rate": self.plan.upsert_rate,
            "warmup": 2.0,
            "duration": self.plan.seconds if not stop_file else 3600.0,
            "stop_file": stop_file,
        }
        upserts = self._client_start(spec)
        result = dict(gets())
        result["upserts"] = _brief(self._client_result(upserts))
        return result

    # ------------------------------------------------------------------ 3 and 4. soak

    def _soak(self, name: str, stalled: int) -> None:
        plan = self.plan
        say(
            f"{name}: {plan.soak_gets:,} Gets, {plan.soak_upserts:,} Upserts"
            + (f", {stalled:,} stalled calls" if stalled else "")
        )
        self._restart_server()
        holder = None
        if stalled:
            holder = subprocess.Popen(
                ["taskset", "-c", _LOAD_CPU, sys.executable, "-m", "bench.stalled",
                 f"127.0.0.1:{self.port}", str(stalled)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )  # fmt: skip
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != b"held":
                raise RuntimeError("the stalled callers did not start")
        samples: list[dict[str, float]] = []
        sampling = threading.Event()

        def sample() -> None:
            assert self.server is not None
            while not sampling.wait(1.0):
                samples.append(_process_sample(self.server.pid, self.metrics_port))

        sampler = threading.Thread(target=sample)
        sampler.start()
        upserts = self._client_start(
            {"rpc": "upsert", "concurrency": 4, "owners": plan.rows, "mint": 20_000}
            | {"calls": plan.soak_upserts}
        )
        gets = self._client(
            {"rpc": "get", "concurrency": 16, "owners": plan.rows, "calls": plan.soak_gets}
        )
        upsert_result = self._client_result(upserts)
        sampling.set()
        sampler.join()
        held: dict[str, Any] = {}
        if holder is not None:
            out, _ = holder.communicate(b"", timeout=30)
            held = json.loads(out.decode().strip().splitlines()[-1])
        warm = samples[max(0, len(samples) // 10)]
        end = samples[-1]
        growth = end["rss_mb"] / warm["rss_mb"] - 1
        self.facts[name] = {
            "gets": _brief(gets),
            "upserts": _brief(upsert_result),
            "stalled": held,
            "after_warmup": warm,
            "end": end,
            "peak_rss_mb": max(s["rss_mb"] for s in samples),
            "samples": len(samples),
        }
        errors = gets["errors"] + upsert_result["errors"]
        say(f"  {gets['rps']:,.0f} Gets/s, errors {errors}; RSS {warm['rss_mb']:.0f} → "
            f"{end['rss_mb']:.0f} MB; fds {warm['fds']:.0f} → {end['fds']:.0f}; "
            f"pool {warm['pool']:.0f} → {end['pool']:.0f}")  # fmt: skip
        self._goal(f"{name}: errors", errors, "0", errors == 0)
        self._goal(f"{name}: RSS end / after warm-up - 1", growth, "<= 0.05", growth <= 0.05, "x")
        flat = end["fds"] <= warm["fds"] and end["pool"] <= warm["pool"]
        self._goal(f"{name}: open files, then pool, at the end", end["fds"], "flat", flat)

    # ------------------------------------------------------------------ plumbing

    @property
    def db_(self) -> database.BenchDatabase:
        assert self.db is not None
        return self.db

    def _goal(self, name: str, measured: float, target: str, met: bool, unit: str = "") -> None:
        self.goals.append(Goal(name, round(measured, 3), target, met, unit))

    def _start_server(self) -> None:
        self.port, self.metrics_port = procs.free_port(), procs.free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "OTEL_"))},
            "DATABASE_URL": self.db_.service_url,
            "JWT_SECRET": JWT_SECRET,
            "GRPC_PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            "WORKERS": "1",
            "PROFILE_ENCRYPTION_KEYS": _KEYS,
        }
        self.server = self.processes.start(
            [_CLI, "serve"], cpus=_SERVER_CPU, env=env, log=self.logs / "scale-server.log"
        )
        procs.wait_until(self._serving, 60, "the server")

    def _restart_server(self) -> None:
        assert self.server is not None
        self.processes.stop(self.server)
        self._start_server()

    def _serving(self) -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def _client_start(self, spec: dict[str, Any]) -> "subprocess.Popen[bytes]":
        path = self.tmp / f"spec-{time.monotonic_ns()}.json"
        path.write_text(json.dumps({"target": f"127.0.0.1:{self.port}", **spec}))
        return subprocess.Popen(
            ["taskset", "-c", _LOAD_CPU, sys.executable, "-m", "bench.client", str(path)],
            env={**os.environ, "BENCH_JWT_SECRET": JWT_SECRET},
            stdout=subprocess.PIPE,
        )

    def _client_result(self, client: "subprocess.Popen[bytes]") -> dict[str, Any]:
        out, _ = client.communicate()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if client.returncode != 0 or not lines:
            raise RuntimeError(f"a load generator failed ({client.returncode})")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def _client(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._client_result(self._client_start(spec))

    def _sql_timed(self, sql: str, params: tuple[Any, ...], *, vacuum: bool) -> float:
        began = time.monotonic()
        with psycopg.connect(self.db_.admin_url, autocommit=True) as conn:
            conn.execute(sql, params)
            if vacuum:
                conn.execute("VACUUM ANALYZE profile.profiles")
        return time.monotonic() - began

    def _sizes(self) -> dict[str, Any]:
        with psycopg.connect(self.db_.admin_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*), pg_table_size('profile.profiles'),"
                " pg_indexes_size('profile.profiles'), n_dead_tup, n_live_tup"
                " FROM profile.profiles, pg_stat_user_tables"
                " WHERE relid = 'profile.profiles'::regclass GROUP BY n_dead_tup, n_live_tup"
            ).fetchone()
        assert row is not None
        return {
            "rows": row[0],
            "table_mb": round(row[1] / 2**20),
            "indexes_mb": round(row[2] / 2**20),
            "dead_tuples": row[3],
        }


class _LockWatcher(threading.Thread):
    """Polls pg_stat_activity every 20 ms for sessions waiting on a lock; keeps each wait's
    longest age seen."""

    def __init__(self, admin_url: str) -> None:
        super().__init__(daemon=True)
        self._url = admin_url
        self._finished = threading.Event()
        self.waits: dict[tuple[int, str], float] = {}

    def run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._finished.wait(0.02):
                for pid, since, age in conn.execute(
                    "SELECT pid, query_start::text, extract(epoch FROM now() - query_start) * 1000"
                    " FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchall():
                    key = (pid, since)
                    self.waits[key] = max(self.waits.get(key, 0.0), float(age))

    def stop(self) -> None:
        """Stop polling."""
        self._finished.set()
        self.join()

    @property
    def longest_ms(self) -> float:
        """The longest lock wait seen, in milliseconds (0: none seen)."""
        return max(self.waits.values(), default=0.0)

    def summary(self) -> dict[str, Any]:
        """How many waits were seen and how long."""
        ages = sorted(self.waits.values())
        return {
            "waits_seen": len(ages),
            "longest_ms": round(ages[-1], 1) if ages else 0.0,
            "median_ms": round(ages[len(ages) // 2], 1) if ages else 0.0,
        }


def _process_sample(pid: int, metrics_port: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    pool = float("nan")
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("profile_db_pool_size "):
                    pool = float(line.split()[1])
    except OSError:
        pass
    return {"t": time.monotonic(), "rss_mb": rss / 1024, "fds": fds, "pool": pool}


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("calls", "errors", "error_codes", "rps", "p50_ms", "p99_ms", "max_ms")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k in keys}


def main() -> int:
    """Run it; write bench/results/scale.json; print the goals."""
    plan = Plan.from_env(dict(os.environ))
    say(f"scale: {plan}")
    scale = Scale(plan)
    try:
        result = scale.run()
    finally:
        scale.close()
    output = RESULTS_DIR / "scale.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print("| goal | measured | target | met |\n| --- | ---: | --- | --- |")
    for goal in result["goals"]:
        verdict = "met" if goal["met"] else "NOT met"
        measured = f"{goal['measured']:,} {goal['unit']}"
        print(f"| {goal['name']} | {measured} | {goal['target']} | {verdict} |")
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
