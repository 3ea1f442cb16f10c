"""A real PgBouncer (Debian's `pgbouncer`) in transaction mode in front of the test database,
for the suite's second pass (`make test`: PROFILE_TEST_VIA_PGBOUNCER=1) and its own tests."""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.e2e.probes import free_port

# The pass of the suite that runs every server through PgBouncer.
VIA_PGBOUNCER = os.environ.get("PROFILE_TEST_VIA_PGBOUNCER") == "1"
INSTALL_HINT = "apt-get install pgbouncer"


def binary() -> str | None:
    """The pgbouncer executable, or None."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def version() -> tuple[int, ...]:
    """pgbouncer's version, e.g. (1, 18, 0)."""
    out = subprocess.run([binary() or "pgbouncer", "--version"], capture_output=True, text=True)
    first = out.stdout.split()[1] if out.stdout else "0"
    return tuple(int(p) for p in first.split(".") if p.isdigit())


@contextmanager
def running(upstream_url: str, logins: dict[str, str], **settings: str) -> Iterator[int]:
    """PgBouncer in transaction mode, forwarding every database to `upstream_url`'s server,
    letting in `logins` (user → password); yields its port. `settings` add to [pgbouncer]."""
    executable = binary()
    if executable is None:
        raise RuntimeError(f"pgbouncer is not installed ({INSTALL_HINT})")
    upstream = conninfo_to_dict(upstream_url)
    host, port = str(upstream.get("host") or "127.0.0.1"), str(upstream.get("port") or 5432)
    listen = free_port()
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as folder:
        here = Path(folder)
        # PgBouncer refuses to run as root: it then runs as nobody, which must read and write here.
        here.chmod(0o777)
        users = "".join(f'"{user}" "{password}"\n' for user, password in logins.items())
        (here / "users.txt").write_text(users)
        options = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(listen),
            "unix_socket_dir": "",
            "auth_type": "plain",
            "auth_file": str(here / "users.txt"),
            "pool_mode": "transaction",
            "max_client_conn": "500",
            "default_pool_size": "20",
            "logfile": str(here / "pgbouncer.log"),
            **settings,
        }
        lines = ["[databases]", f"* = host={host} port={port}", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in options.items()]
        (here / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        for name in ("users.txt", "pgbouncer.ini"):
            (here / name).chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        process = subprocess.Popen(
            [executable, *user, str(here / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(listen, process)
            yield listen
        finally:
            process.terminate()
            process.wait(timeout=10)


def through(url: str, port: int) -> str:
    """`url` (a postgresql:// URL) connecting to PgBouncer on 127.0.0.1:`port` instead."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    # A Unix-socket host given as a query parameter would win over the netloc: drop it.
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.startswith(("host=", "port="))
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def login_of(url: str) -> tuple[str, str]:
    """The user and password a postgresql:// URL logs in with."""
    parts = urlsplit(url)
    return unquote(parts.username or ""), unquote(parts.password or "")


def transactions(service_url: str, database: str) -> int:
    """How many transactions the PgBouncer that `service_url` goes through has run for
    `database` (its admin console, which `running(admin_users=…)` opened to that login)."""
    console = psycopg.connect(
        service_url,
        dbname="pgbouncer",
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,  # the console speaks the simple protocol only
    )
    with console:
        cursor = console.execute("SHOW STATS")
        columns = [d.name for d in cursor.description or ()]
        for row in cursor.fetchall():
            stats = dict(zip(columns, row, strict=True))
            if stats["database"] == database:
                return int(stats["total_xact_count"])
    return 0


def _wait_listening(port: int, process: "subprocess.Popen[bytes]") -> None:
    stop = time.monotonic() + 10
    while time.monotonic() < stop:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}")
        try:
            # Any answer at all, even a refusal, shows it listens.
            psycopg.connect(
                f"host=127.0.0.1 port={port} user=probe dbname=probe", connect_timeout=1
            )
        except psycopg.OperationalError as exc:
            if "Connection refused" not in str(exc):
                return
        else:
            return
        time.sleep(0.05)
    raise RuntimeError("pgbouncer did not start listening")
