"""Assembly: pool, interceptors, API, health and reflection; SIGTERM drains, then exits 0."""

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from psycopg_pool import ConnectionPool

from profile_service import db, reflection
from profile_service._proto.profile.v1 import profile_service_pb2 as pb
from profile_service._proto.profile.v1 import profile_service_pb2_grpc as pb_grpc
from profile_service.access_log import AccessLogInterceptor
from profile_service.auth import AuthInterceptor, TokenVerifier
from profile_service.config import Settings
from profile_service.health import SERVICE_NAME, DatabaseHealthMonitor
from profile_service.service import ProfileService
from profile_service.servicer import ProfileServicer

_LOGGER = logging.getLogger(__name__)


class UnsafeDatabaseRole(Exception):
    """The login role could bypass row-level security, or the schema is missing."""


@dataclass
class RunningServer:
    """A started server and what must be stopped with it."""

    server: grpc.Server
    port: int
    pool: ConnectionPool
    health: DatabaseHealthMonitor

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace`, close the pool."""
        self.health.stop()
        self.server.stop(grace).wait()
        self.pool.close()


def check_login_role(pool: ConnectionPool, timeout: float) -> None:
    """Refuse a login role under which row-level security would not hold."""
    with pool.connection(timeout=timeout) as conn:
        # By OID via pg_class: the login role has no USAGE on schema profile, by design.
        row = conn.execute(
            """SELECT r.rolsuper, r.rolbypassrls,
                      pg_has_role('authenticated', 'MEMBER'), pg_has_role('service_role', 'MEMBER'),
                      pg_get_userbyid(c.relowner) = current_user,
                      has_table_privilege(c.oid, 'SELECT')
                 FROM pg_roles r
                 LEFT JOIN pg_class c
                   ON c.relname = 'profiles'
                  AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'profile')
                WHERE r.rolname = current_user"""
        ).fetchone()
    assert row is not None
    superuser, bypass_rls, is_authenticated, is_service, owns, can_read = row
    if owns is None:
        raise UnsafeDatabaseRole("table profile.profiles is missing: run `profile-service migrate`")
    problems = [
        text
        for bad, text in (
            (superuser, "is a superuser"),
            (bypass_rls, "has BYPASSRLS"),
            (owns, "owns profile.profiles"),
            (can_read, "can read profile.profiles without SET ROLE (make it NOINHERIT)"),
            (not is_authenticated, "is not a member of authenticated"),
            (not is_service, "is not a member of service_role"),
        )
        if bad
    ]
    if problems:
        raise UnsafeDatabaseRole(
            "refusing to serve: the database login role "
            + ", ".join(problems)
            + "; row-level security would not hold"
        )


def start(settings: Settings, *, host: str = "[::]") -> RunningServer:
    """Open the pool, check the login role, and start serving on settings.grpc_port (0: any)."""
    pool = db.create_pool(
        settings.database_url,
        min_size=settings.db_pool_size,
        max_size=settings.db_pool_size,
        prepare=settings.db_prepare,
    )
    pool.open(wait=False)
    try:
        check_login_role(pool, timeout=max(settings.db_timeout_seconds, 10.0))
    except BaseException:
        pool.close()
        raise

    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
    )
    monitor = DatabaseHealthMonitor(pool, health_servicer, settings.health_check_interval_seconds)
    service = ProfileService(
        pool,
        min_retention_days=settings.purge_min_retention_days,
        db_timeout_seconds=settings.db_timeout_seconds,
        on_database_error=monitor.recheck,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="rpc"),
        interceptors=[AccessLogInterceptor(), AuthInterceptor(TokenVerifier(settings))],
    )
    pb_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(service), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable(
        server,
        (
            pb.DESCRIPTOR.services_by_name["ProfileService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ),
    )
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    monitor.check_once()
    monitor.start()
    server.start()
    _LOGGER.info("serving %s on port %d", SERVICE_NAME, port)
    return RunningServer(server=server, port=port, pool=pool, health=monitor)


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; drain in-flight calls; return the exit code (0)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    running = start(settings)
    stop.wait()
    _LOGGER.info("shutting down: draining calls for up to %.0fs", settings.shutdown_grace_seconds)
    running.stop(settings.shutdown_grace_seconds)
    _LOGGER.info("stopped")
    return 0
