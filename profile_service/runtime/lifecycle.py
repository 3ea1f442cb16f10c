"""One server process, from start to stop: the scheduling policy, the stop signals, the drain.

`profile-service serve` runs this once (cli.py), or in each of its workers (workers.py).
"""

import logging
import os
import signal
from collections.abc import Callable

from profile_service.runtime.config import Settings
from profile_service.transport import server

_LOGGER = logging.getLogger(__name__)


def run(
    settings: Settings, *, worker: bool = False, on_serving: Callable[[], None] = lambda: None
) -> int:
    """Serve until SIGTERM or SIGINT; drain in-flight calls; return the exit code (0).

    `worker`: one of several processes sharing the port (their parent serves the metrics).
    `on_serving` is called once the server serves.
    """
    # Blocked before any thread starts, so every thread inherits the mask and only sigwait()
    # below receives them. With a Python handler instead, the kernel may deliver the signal to
    # one of gRPC's busy threads while the main thread sleeps in a lock that it never
    # interrupts: under load a worker then missed SIGTERM (seen in the bench).
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    if settings.sched_batch:
        schedule_as_batch()
    running = server.start(settings, serve_metrics=not worker, reuse_port=worker)
    on_serving()
    received = signal.sigwait(stop_signals)
    _LOGGER.info(
        "%s: draining calls for up to %.0fs",
        signal.Signals(received).name,
        settings.shutdown_grace_seconds,
    )
    running.stop(settings.shutdown_grace_seconds)
    _LOGGER.info("stopped")
    return 0


def schedule_as_batch() -> None:
    """Put this thread, and so every thread started after it, under SCHED_BATCH.

    Our threads take turns on one interpreter lock. Under the default policy a thread woken by
    the network or the database preempts the running one, usually only to wait for the lock
    that one holds: a context switch for nothing. SCHED_BATCH tasks do not preempt on wake-up
    and keep normal priority: fewer context switches per call (the bench's figures are in
    bench/README.md). No privilege is needed.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        _LOGGER.warning("SCHED_BATCH not applied (%s); running under the default policy", exc)
