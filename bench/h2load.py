"""Driving h2load (Debian `nghttp2-client`) as a gRPC unary load generator.

h2load POSTs a file as the request body, so a gRPC call is the pre-framed message (compression
flag 0, 4-byte big-endian length, payload) with the headers `content-type: application/grpc`,
`te: trailers`, `grpc-timeout` and `authorization: Bearer ...`. Two limits, and what we do:

- One header set per h2load process, so one token, i.e. one owner, per process. A cell runs
  several h2load processes side by side (`procs`, default 8), each with its own token and its
  share of the connections.
- h2load judges only the HTTP status. A gRPC error is HTTP 200 with `grpc-status` in the
  trailers and, from grpc's servers, no message at all (a trailers-only response). Every OK
  answer of one process carries the same message (same token, same profile), whose framed
  length we learn first with one checked call; so OK calls = response DATA bytes / that length,
  and the rest of the completed calls are gRPC errors. h2load's byte counters include its
  --warm-up-time, so the warm-up is a separate, unmeasured run instead.
"""

import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.payloads import GRPC_TIMEOUT_HEADER, METHODS, REQUESTS, grpc_frame
from bench.procs import Meter, Processes

_REQUESTS_LINE = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_DATA_BYTES = re.compile(r"\((\d+)\) data")
_STATUS_LINE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclass(frozen=True)
class Stream:
    """One h2load process's share: its token, the framed size of each OK answer, connections,
    and calls in flight on each connection."""

    token: str
    answer_bytes: int
    connections: int
    streams: int = 1


def find() -> str | None:
    """The h2load executable, if installed."""
    return shutil.which("h2load")


# What to tell a user whose machine has no h2load: the bench installs nothing itself.
INSTALL_HINT = "h2load comes with nghttp2 (Debian: apt-get install nghttp2-client)"


def split(concurrency: int, procs: int) -> list[int]:
    """Connections per process: `concurrency` spread over at most `procs` processes."""
    count = max(1, min(concurrency, procs))
    return [concurrency // count + (1 if i < concurrency % count else 0) for i in range(count)]


class H2Load:
    """Runs h2load cells against one server; owns the request files it writes."""

    def __init__(
        self,
        executable: str,
        cpus: str,
        processes: Processes,
    ) -> None:
        self._exe = executable
        self._cpus = cpus
        self._processes = processes
        self._dir = Path(tempfile.mkdtemp(prefix="profile-bench-h2load-"))
        self._bodies: dict[str, Path] = {}
        for rpc, request in REQUESTS.items():
            path = self._dir / f"{rpc}.bin"
            path.write_bytes(grpc_frame(request()))
            self._bodies[rpc] = path

    def close(self) -> None:
        """Remove the request files and logs."""
        shutil.rmtree(self._dir, ignore_errors=True)

    def _command(
        self, port: int, rpc: str, stream: Stream, millis: int, log: Path | None
    ) -> list[str]:
        command = [
            "taskset", "-c", self._cpus, self._exe,
            "-c", str(stream.connections), "-m", str(stream.streams), "-t", "1",
            "-D", f"{millis}ms",
            "-d", str(self._bodies[rpc]),
            "-H", "content-type: application/grpc",
            "-H", "te: trailers",
            "-H", f"grpc-timeout: {GRPC_TIMEOUT_HEADER}",
            "-H", f"authorization: Bearer {stream.token}",
        ]  # fmt: skip
        if log is not None:
            command += ["--log-file", str(log)]
        return [*command, f"http://127.0.0.1:{port}{METHODS[rpc]}"]

    def _run_all(self, commands: list[list[str]], timeout: float) -> list[str]:
        started = [self._processes.start(command, capture=True) for command in commands]
        outputs = []
        for process in started:
            try:
                out, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._processes.stop(process, grace=1)
                out, _ = process.communicate()
            self._processes.forget(process)
            outputs.append(out.decode(errors="replace"))
        return outputs

    def cell(
        self,
        port: int,
        rpc: str,
        streams: list[Stream],
        warmup: float,
        duration: float,
        meter: Meter,
    ) -> dict[str, Any]:
        """Warm up, then measure for `duration` seconds; the cell's figures."""
        timeout = warmup + duration + 30
        if warmup > 0:
            self._run_all(
                [self._command(port, rpc, s, int(warmup * 1000), None) for s in streams], timeout
            )
        logs = [self._dir / f"log-{i}.tsv" for i in range(len(streams))]
        for log in logs:
            log.unlink(missing_ok=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter.start()
        outputs = self._run_all(
            [
                self._command(port, rpc, s, int(duration * 1000), log)
                for s, log in zip(streams, logs, strict=True)
            ],
            timeout,
        )
        usage = meter.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = ok = failed = http_errors = 0
        inexact = False
        for stream, output in zip(streams, outputs, strict=True):
            counts = _REQUESTS_LINE.search(output)
            data = _DATA_BYTES.search(output)
            statuses = _STATUS_LINE.search(output)
            if counts is None or data is None or statuses is None:
                raise RuntimeError(f"h2load gave no statistics:\n{output[-2000:]}")
            n_done = int(counts.group(3))
            n_ok, rest = divmod(int(data.group(1)), stream.answer_bytes)
            inexact = inexact or rest != 0
            done += n_done
            ok += min(n_ok, n_done)
            failed += int(counts.group(5))
            http_errors += sum(int(statuses.group(i)) for i in (2, 3, 4))
        latencies = sorted(_log_latencies(logs))
        errors = done - ok  # h2load counts failed streams among the done ones
        return {
            "calls": done,
            "ok": ok,
            "errors": errors,
            "error_codes": {
                k: v
                for k, v in {
                    "grpc error (answer without message)": errors - failed - http_errors,
                    "http status not 2xx": http_errors,
                    "stream failed/errored/timed out": failed,
                }.items()
                if v > 0
            },
            "answer_size_check": "inexact" if inexact else "exact",
            "rps": ok / duration,
            "p50_ms": _percentile(latencies, 0.50),
            "p90_ms": _percentile(latencies, 0.90),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": latencies[-1] / 1000 if latencies else 0.0,
            "tokens": len({s.token for s in streams}),
            "processes": len(streams),
            "loadgen_cpu": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            / duration,
            **usage,
        }


def _log_latencies(logs: list[Path]) -> list[int]:
    """Microseconds per request from h2load's --log-file (start, status, duration)."""
    found = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3:
                found.append(int(fields[2]))
    return found


def _percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted microseconds, in milliseconds."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1] / 1000
