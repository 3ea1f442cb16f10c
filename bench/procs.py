"""Every process the bench starts, pinned with taskset and stopped at the end, whatever happens.

Each child gets its own session (process group), so a Ctrl-C in the terminal reaches only the
bench, which then stops its children itself: SIGTERM to the group (the real server drains),
SIGKILL after a grace period.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any


class Processes:
    """Starts children and remembers them until they are stopped."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: Sequence[str],
        *,
        cpus: str | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        capture: bool = False,
    ) -> "subprocess.Popen[bytes]":
        """Start `command` (pinned to `cpus`); output to `log`, to a pipe, or discarded."""
        argv = ["taskset", "-c", cpus, *command] if cpus is not None else list(command)
        out: int | IO[bytes]
        if capture:
            out = subprocess.PIPE
        elif log is not None:
            out = log.open("wb")
        else:
            out = subprocess.DEVNULL
        try:
            child = subprocess.Popen(
                argv,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if log is not None or capture else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self._children.append(child)
        return child

    def stop(self, child: "subprocess.Popen[bytes]", grace: float = 10.0) -> int | None:
        """SIGTERM its process group, wait up to `grace` seconds, then SIGKILL; its exit code."""
        if child.poll() is None:
            _signal_group(child, signal.SIGTERM)
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
            # Workers a server forked may outlive it in its group: end them too.
            _signal_group(child, signal.SIGKILL)
        self.forget(child)
        return child.returncode

    def forget(self, child: "subprocess.Popen[bytes]") -> None:
        """Stop tracking a child that has ended (so its id is never signalled again)."""
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        """Stop every child still known, the newest first."""
        for child in reversed(list(self._children)):
            self.stop(child, grace=5.0)


def _signal_group(child: "subprocess.Popen[bytes]", sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for candidate in times:
        walk = candidate
        while walk > 1:
            if walk == pid:
                total += times[candidate]
                break
            walk = parents.get(walk, 0)
    return total


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = []
    for candidate in parents:
        walk = parents.get(candidate, 0)
        while walk > 1:
            if walk == pid:
                found.append(candidate)
                break
            walk = parents.get(walk, 0)
    return found


def spawned_workers(pid: int) -> list[int]:
    """The multiprocessing-spawned worker processes under `pid` (not its resource tracker)."""
    workers = []
    for child in _descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return sorted(workers)


def pin_threads(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` to `cpu` (affinity is per thread on Linux)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), {cpu})


def cpu_busy() -> dict[str, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat, to diff across a cell."""
    found = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values]
            idle = numbers[3] + numbers[4]  # idle + iowait
            found[name] = (sum(numbers) - idle, sum(numbers))
    return found


def busy_share(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float]:
    """Each CPU's busy fraction between two cpu_busy() readings."""
    shares = {}
    for name, (busy, total) in after.items():
        busy0, total0 = before.get(name, (0, 0))
        shares[name] = (busy - busy0) / (total - total0) if total > total0 else 0.0
    return shares


def cpu_steal() -> tuple[int, int]:
    """(steal, total) jiffies over all CPUs: time a hypervisor gave to other guests."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    numbers = [int(v) for v in first[1:]]
    return (numbers[7] if len(numbers) > 7 else 0), sum(numbers)


def pin(pids: list[int], cpus: str, expect: str) -> int:
    """Pin each process whose name is `expect` to `cpus` ("1" or "0,1"); how many were pinned.

    The name check keeps a process id from another machine (a remote database's) from pinning
    an unrelated local process. Processes that ended meanwhile are skipped; an OSError (no
    permission) is raised.
    """
    chosen = {int(c) for c in cpus.split(",")}
    pinned = 0
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != expect:
                continue
            os.sched_setaffinity(pid, chosen)
            pinned += 1
        except (ProcessLookupError, FileNotFoundError):
            continue
    return pinned


# Per thread of a process tree: (name, CPU seconds, voluntary and involuntary switches).
ThreadStats = dict[int, tuple[str, float, int, int]]


def thread_stats(pid: int) -> ThreadStats:
    """Every thread of `pid` and its descendants, by thread id. A thread's name is its `comm`:
    gRPC names its own (event_engine, grpc_global_tim…), Python's are all the process's name,
    so "main" marks a process's first thread."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: ThreadStats = {}
    for process in (pid, *_descendants(pid)):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{process}/task").iterdir():
                with contextlib.suppress(OSError):
                    stat = (task / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()
                    switches = {
                        key: int(value)
                        for key, _, value in (
                            line.partition(":\t")
                            for line in (task / "status").read_text().splitlines()
                        )
                        if key.endswith("ctxt_switches")
                    }
                    name = (task / "comm").read_text().strip()
                    if int(task.name) == process:
                        name += " (main)"
                    found[int(task.name)] = (
                        name,
                        (int(fields[11]) + int(fields[12])) / ticks,
                        switches.get("voluntary_ctxt_switches", 0),
                        switches.get("nonvoluntary_ctxt_switches", 0),
                    )
    return found


class Meter:
    """Server CPU (its process tree, in cores, and per thread), its context switches, each
    CPU's busy share and the steal share between start and stop."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._cpu = 0.0
        self._threads: ThreadStats = {}
        self._busy: dict[str, tuple[int, int]] = {}
        self._steal = (0, 0)
        self._began = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._cpu = tree_cpu_seconds(self._pid)
        self._threads = thread_stats(self._pid)
        self._busy = cpu_busy()
        self._steal = cpu_steal()
        self._began = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """Take the second reading; the usage in between."""
        elapsed = time.monotonic() - self._began
        cpu = tree_cpu_seconds(self._pid) - self._cpu
        steal, total = cpu_steal()
        threads: list[dict[str, Any]] = []
        voluntary = involuntary = 0
        for tid, (name, seconds, vol, invol) in thread_stats(self._pid).items():
            _, seconds0, vol0, invol0 = self._threads.get(tid, (name, 0.0, 0, 0))
            voluntary += vol - vol0
            involuntary += invol - invol0
            if seconds > seconds0:
                threads.append({"thread": name, "cpu_seconds": round(seconds - seconds0, 3)})
        threads.sort(key=lambda t: -float(t["cpu_seconds"]))
        return {
            "server_cpu": cpu / elapsed if elapsed > 0 else 0.0,
            "elapsed": elapsed,
            "threads": threads,
            "switches": {"voluntary": voluntary, "involuntary": involuntary},
            "cpu_busy": busy_share(self._busy, cpu_busy()),
            "steal": (steal - self._steal[0]) / max(1, total - self._steal[1]),
        }


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` every 0.1 s until it holds; TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.1)
