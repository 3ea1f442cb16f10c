"""Database-aware health: SERVING only while the database answers."""

import logging
import threading

import psycopg
from grpc_health.v1 import health, health_pb2
from psycopg_pool import ConnectionPool, PoolTimeout

from profile_service import metrics

_LOGGER = logging.getLogger(__name__)
SERVICE_NAME = "profile.v1.ProfileService"
# SERVING while the process serves, whatever the database does: for liveness probes, so that a
# database outage makes pods unready instead of restarting them.
LIVENESS_SERVICE = "liveness"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealthMonitor:
    """Polls the database and sets the stock HealthServicer for "" and the API service.

    A request that meets a database error calls `recheck()`, so the status follows an outage
    without waiting for the next poll, and broken pooled connections are dropped at once.
    """

    def __init__(self, pool: ConnectionPool, servicer: health.HealthServicer, interval: float):
        self._pool = pool
        self._servicer = servicer
        self._interval = interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._serving: bool | None = None
        self._publishing = threading.Lock()  # the poller and its watchdog both publish
        # A check may take the pool's wait (2 intervals) and then a moment for SELECT 1.
        self._overdue_after = 2 * interval + 1.0
        self._thread = threading.Thread(target=self._loop, name="db-health", daemon=True)

    def start(self) -> None:
        """Report the process alive and start polling in a daemon thread."""
        self._servicer.set(LIVENESS_SERVICE, _SERVING)
        self._thread.start()

    def stop(self) -> None:
        """Report NOT_SERVING from now on and stop polling."""
        self._stopped.set()
        self._wake.set()
        self._servicer.enter_graceful_shutdown()
        self._thread.join(timeout=5)

    def recheck(self) -> None:
        """Poll now rather than at the next interval."""
        self._wake.set()

    def check_once(self) -> bool:
        """Query the database once and publish the result; True if it answered."""
        ok = self._database_answers()
        with self._publishing:
            self._publish(ok)
        return ok

    def _database_answers(self) -> bool:
        try:
            with self._pool.connection(timeout=self._interval * 2) as conn:
                conn.execute("SELECT 1")
            return True
        except (PoolTimeout, psycopg.Error):
            # Drop idle connections that died with the server, so recovery needs no requests.
            self._pool.check()
            return False

    def _publish(self, ok: bool) -> None:
        """Set the status (the caller holds _publishing)."""
        if ok == self._serving or self._stopped.is_set():
            return
        self._serving = ok
        self._announce(ok)

    def _announce(self, ok: bool) -> None:
        status = _SERVING if ok else _NOT_SERVING
        for name in ("", SERVICE_NAME):
            self._servicer.set(name, status)
        log = _LOGGER.info if ok else _LOGGER.warning
        log(
            "database %s; health %s",
            "reachable" if ok else "unreachable",
            health_pb2.HealthCheckResponse.ServingStatus.Name(status),
        )

    def _watched_check(self) -> None:
        """check_once, with NOT_SERVING published meanwhile if it hangs.

        A database that stops answering but keeps its connections open (hung, or frozen
        behind a proxy) leaves SELECT 1 waiting without a timeout of its own: the last status
        would otherwise stand, and the pod stay ready while every call fails.
        """
        finished = False

        def overdue() -> None:
            # Under the lock the check publishes with: a check that has just finished wins.
            with self._publishing:
                if not finished:
                    _LOGGER.warning("database check overdue (%.1fs)", self._overdue_after)
                    self._publish(False)

        watchdog = threading.Timer(self._overdue_after, overdue)
        watchdog.daemon = True
        watchdog.start()
        try:
            ok = self._database_answers()
        finally:
            watchdog.cancel()
        with self._publishing:
            finished = True
            self._publish(ok)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._watched_check()
            metrics.observe_pool(self._pool)
            self._wake.wait(self._interval)
            self._wake.clear()
