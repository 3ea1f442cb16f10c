"""`serve --workers N`: N server processes on one port, for all cores.

Python threads share one core's worth of interpreter, so the service scales across cores with
processes. Each worker is a full server (its own pool, health and interceptors) bound to the
same port with SO_REUSEPORT; the kernel spreads connections over them. This parent only
supervises: it serves the workers' summed metrics, forwards SIGTERM so every worker drains,
and if a worker dies unexpectedly it stops the others and exits non-zero, so that Kubernetes
restarts the pod rather than running it short of a worker.
"""

import logging
import multiprocessing
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType

from profile_service.runtime import lifecycle, logs, metrics
from profile_service.runtime.config import Settings

_LOGGER = logging.getLogger(__name__)


def _worker_main(settings: Settings, cpu: int | None, serving: EventType) -> None:
    if cpu is not None:
        # Before any thread starts, so that all of this worker's threads inherit it: a Python
        # process whose threads the kernel moves between cores pays for the GIL travelling
        # with them (measured: 2 unpinned workers were slower than 1 on 2 cores).
        os.sched_setaffinity(0, {cpu})
    logs.configure(settings.log_level)
    raise SystemExit(lifecycle.run(settings, worker=True, on_serving=serving.set))


def supervise(settings: Settings) -> int:
    """Run settings.workers worker processes until SIGTERM/SIGINT; 0 if all drained cleanly."""
    if settings.grpc_port == 0:
        raise ValueError("several workers need a fixed GRPC_PORT to share")
    with tempfile.TemporaryDirectory(prefix="profile-metrics-") as metrics_dir:
        # The spawned workers inherit this and so write their metrics there, which is how
        # prometheus_client's multiprocess mode sums them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

        # spawn, not fork: gRPC's threads do not survive a fork.
        context = multiprocessing.get_context("spawn")
        cpus = sorted(os.sched_getaffinity(0))
        # Pinned only when workers and usable CPUs match one to one (a cpuset sized for them).
        # Under a CPU quota the affinity is the whole node, shared with other pods: pinning
        # every pod's first worker to the node's first CPU would pile them up.
        pin = settings.pin_workers and len(cpus) == settings.workers
        children: list[BaseProcess] = []
        stopping = threading.Event()
        told: set[int] = set()

        def stop(*_: object) -> None:
            """Forward the stop to every started worker not yet told (called again later for
            a worker whose start the signal interrupted: it had no pid yet)."""
            stopping.set()
            for child in children:
                if child.pid is not None and child.pid not in told and child.exitcode is None:
                    told.add(child.pid)
                    os.kill(child.pid, signal.SIGTERM)

        # Before anything that starts a process (the first Event starts multiprocessing's
        # resource tracker): a Ctrl-C from then on is a stop, not a KeyboardInterrupt.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        serving = [context.Event() for _ in range(settings.workers)]
        children += [
            context.Process(
                target=_worker_main,
                args=(settings, cpus[i] if pin else None, serving[i]),
                name=f"worker-{i}",
            )
            for i in range(settings.workers)
        ]
        for child in children:
            child.start()
        if stopping.is_set():
            stop()
        metrics_server, _ = metrics.serve(settings.metrics_port)
        _LOGGER.info("supervising %d workers on port %d", len(children), settings.grpc_port)
        try:
            failed = _wait(children, serving, stopping, stop)
        finally:
            metrics_server.shutdown()
            metrics_server.server_close()
    return 1 if failed else 0


def _wait(
    children: list[BaseProcess],
    serving: list[EventType],
    stopping: threading.Event,
    stop: Callable[[], None],
) -> bool:
    """Wait until every child has exited; True if any exited badly or before being asked."""
    failed = False
    running = list(children)
    while running:
        wait([c.sentinel for c in running], timeout=1.0)
        for child in [c for c in running if c.exitcode is not None]:
            running.remove(child)
            if child.pid is not None:
                metrics.forget_process(child.pid)
            # A worker that was not serving yet when the stop came had no calls to drain: any
            # way it ended is a clean stop (the signal, or a KeyboardInterrupt from Ctrl-C in
            # the middle of its imports, which exits 1).
            started = serving[children.index(child)].is_set()
            stopped = child.exitcode in (0, -signal.SIGTERM, -signal.SIGINT) or not started
            if not (stopping.is_set() and stopped):
                failed = True
                _LOGGER.error("%s exited with %s", child.name, child.exitcode)
                if not stopping.is_set():
                    stop()
    return failed
