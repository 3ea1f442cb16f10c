"""The bench's own database: found server, fresh database, migrated, seeded, dropped after."""

import time
from dataclasses import dataclass

import psycopg

from devtools import database as devdb
from profile_service.storage import migrate

# Seeded profiles first to last: profile n has owner md5('bench-<n>')::uuid
# (bench.payloads.seeded_owner) and every field set, with values of the lengths a real profile
# has. SEED_DELETED_RANGE: the same, soft-deleted 31 to 60 days ago (purgeable).
_COLUMNS = """
INSERT INTO profile.profiles (owner_id, age, sex, height_cm, weight_kg, experience_level,
                              limitations, primary_goal, available_equipment, session_length,
                              generation_params{deleted})
SELECT md5('bench-' || n)::uuid,
       13 + n %% 90,
       (ARRAY['female', 'male'])[1 + n %% 2],
       150 + n %% 50,
       50 + n %% 60,
       (ARRAY['beginner', 'intermediate', 'advanced'])[1 + n %% 3],
       'none',
       'strength',
       ARRAY['barbell', 'dumbbells', 'kettlebell', 'pull-up bar'],
       '45m',
       '{"split": "upper-lower", "days_per_week": 4, "intensity": "moderate"}'::jsonb{deleted_at}
  FROM generate_series(%s, %s) AS n
"""
SEED_RANGE = _COLUMNS.replace("{deleted}", "").replace("{deleted_at}", "")
SEED_DELETED_RANGE = _COLUMNS.replace("{deleted}", ", deleted_at").replace(
    "{deleted_at}", ",\n       now() - interval '31 days' - (n %% 30) * interval '1 day'"
)


class BenchBusy(Exception):
    """Another bench run holds the lock on this PostgreSQL server."""


class BenchLock:
    """A session advisory lock on the server, held for the whole run.

    Two runs at once would drop each other's database (it has a fixed name) and share the
    CPUs, so the second one stops at once instead.
    """

    _KEY = "SELECT hashtext('profile_service.bench')::bigint"

    def __init__(self, server_url: str) -> None:
        self._conn = psycopg.connect(server_url, autocommit=True)
        row = self._conn.execute(f"SELECT pg_try_advisory_lock(({self._KEY}))").fetchone()
        if not row or not row[0]:
            self._conn.close()
            raise BenchBusy("another bench run is using this PostgreSQL server; try again later")

    def release(self) -> None:
        """Let the next run go (closing the session releases the lock)."""
        self._conn.close()


@dataclass(frozen=True)
class BenchDatabase:
    """The server's administrator URL, the bench database's name and its two URLs."""

    server_url: str
    name: str
    admin_url: str
    service_url: str
    profiles: int
    seconds: float

    def count(self) -> int:
        """Profiles in the table now (as the administrator, so RLS does not apply)."""
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SELECT count(*) FROM profile.profiles").fetchone()
        return int(row[0]) if row else 0

    def session_pids(self) -> list[int]:
        """Process ids of the service login's sessions in this database (the server's pool)."""
        with psycopg.connect(self.admin_url) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                (self.name, devdb.SERVICE_LOGIN_ROLE),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def vacuum(self) -> None:
        """VACUUM ANALYZE the table, as after seeding: after a command that rewrote rows, the
        next server meets a table like the first one did, not autovacuum at work."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE profile.profiles")

    def server_version(self) -> str:
        """PostgreSQL's version string."""
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def prepare(name: str, profiles: int) -> BenchDatabase:
    """Recreate database `name`, migrate it, create the service login, seed `profiles` rows."""
    started = time.monotonic()
    server_url = devdb.admin_url()
    devdb.drop_database(server_url, name)
    devdb.ensure_database(server_url, name)
    admin_url = devdb.with_database(server_url, name)
    migrate.upgrade(admin_url)
    service_url = devdb.ensure_service_login(admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(SEED_RANGE, (1, profiles))
        conn.execute("VACUUM ANALYZE profile.profiles")
    return BenchDatabase(
        server_url=server_url,
        name=name,
        admin_url=admin_url,
        service_url=service_url,
        profiles=profiles,
        seconds=time.monotonic() - started,
    )


def drop(db: BenchDatabase) -> None:
    """Drop the bench database."""
    devdb.drop_database(db.server_url, db.name)
