"""A replicated PostgreSQL of the test's own: a primary and a `pg_basebackup -R` standby on free
ports in a temporary folder, with the binaries pgserver ships (so it runs wherever `make test`
does), for the failover tests. The standby replicates through a TcpProxy, which a test can
freeze to stall the WAL stream."""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pgserver.utils  # type: ignore[import-untyped]
import psycopg
from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]

from devtools import database as devdb
from profile_service.storage import migrate
from tests.e2e.probes import free_port
from tests.e2e.tcp_proxy import TcpProxy

DATABASE = "profile"
# PostgreSQL refuses to run as root; pgserver runs it as this user then, and so do we.
_ROOT_RUNS_AS = "pgserver"


@dataclass
class Node:
    """One PostgreSQL server: its folder and port."""

    name: str
    folder: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"


class Cluster:
    """A primary and its standby; see the module's docstring."""

    def __init__(self, base: Path, synchronous: bool) -> None:
        self._base = base
        self._synchronous = synchronous
        self.primary = Node("primary", base / "primary", free_port())
        self.standby = Node("standby", base / "standby", free_port())
        self.wal_stream = TcpProxy(("127.0.0.1", self.primary.port))
        self.service_url = ""

    def service_url_for(self, *nodes: Node, **params: str) -> str:
        """The service login's URL over `nodes` (libpq tries them in turn)."""
        login, password = devdb.SERVICE_LOGIN_ROLE, devdb.SERVICE_LOGIN_PASSWORD
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        query = "&".join(f"{k}={v}" for k, v in {"connect_timeout": "2", **params}.items())
        return f"postgresql://{login}:{password}@{hosts}/{DATABASE}?{query}"

    def start(self) -> None:
        """initdb the primary, migrate it, clone the standby from it, start both."""
        _run("initdb", "-D", self.primary.folder, "-U", "postgres", "--auth=trust", "-N")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.primary.port),
            "unix_socket_directories": f"'{self._base}'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            "fsync": "off",  # speed only: no test here crashes the machine
        }
        _append_conf(self.primary.folder, settings)
        self.start_node(self.primary)
        devdb.ensure_database(f"postgresql://postgres@127.0.0.1:{self.primary.port}/postgres",
                              DATABASE)  # fmt: skip
        migrate.upgrade(self.primary.admin_url)
        devdb.ensure_service_login(self.primary.admin_url)
        self.wal_stream.start()
        _run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", self.standby.folder, "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        _append_conf(
            self.standby.folder,
            auto=True,  # after what -R wrote there, which would win over postgresql.conf
            settings={
                "port": str(self.standby.port),
                "synchronous_standby_names": "''",
                # Through the proxy, so that a test can stall the WAL stream.
                "primary_conninfo": f"'host=127.0.0.1 port={self.wal_stream.port} "
                "user=postgres application_name=standby'",
            },
        )
        self.start_node(self.standby)
        if self._synchronous:
            # Only now: before a standby exists every commit would wait for one, for ever.
            with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                conn.execute("SELECT pg_reload_conf()")
                _wait_until_synchronous(conn)

    def start_node(self, node: Node) -> None:
        _run("pg_ctl", "-D", node.folder, "-l", node.folder / "log", "-w", "start")

    def kill(self, node: Node) -> None:
        """Stop `node` as a crash would (no checkpoint, connections cut)."""
        _run("pg_ctl", "-D", node.folder, "-m", "immediate", "-w", "stop")

    def promote(self, node: Node) -> None:
        _run("pg_ctl", "-D", node.folder, "-w", "promote")

    def stop(self) -> None:
        self.wal_stream.thaw()
        self.wal_stream.cut()
        for node in (self.standby, self.primary):
            if (node.folder / "postmaster.pid").exists():
                _run("pg_ctl", "-D", node.folder, "-m", "immediate", "-w", "stop", check=False)


@contextmanager
def cluster(synchronous: bool = False) -> Iterator[Cluster]:
    """A started primary and standby, stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="profile-replication-"))
    if os.geteuid() == 0:
        pgserver.utils.ensure_user_exists(_ROOT_RUNS_AS)
        shutil.chown(base, _ROOT_RUNS_AS)
    base.chmod(0o755)
    made = Cluster(base, synchronous)
    try:
        made.start()
        yield made
    finally:
        made.stop()
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_synchronous(conn: psycopg.Connection) -> None:
    stop = time.monotonic() + 30
    while time.monotonic() < stop:
        if conn.execute("SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'").fetchone():
            return
        time.sleep(0.05)
    raise RuntimeError("the standby never became synchronous")


def _run(command: str, *args: object, check: bool = True) -> None:
    user = _ROOT_RUNS_AS if os.geteuid() == 0 else None
    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / command), *map(str, args)],
        user=user,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr[-2000:]}")


def _append_conf(folder: Path, settings: dict[str, str], auto: bool = False) -> None:
    conf = folder / ("postgresql.auto.conf" if auto else "postgresql.conf")
    with conf.open("a") as out:
        out.writelines(f"{key} = {value}\n" for key, value in settings.items())
