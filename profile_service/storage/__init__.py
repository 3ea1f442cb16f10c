"""Storage: PostgreSQL as the use cases see it (one statement a call under the caller's
row-level security), the pool and its non-blocking round trip, the database's health and
liveness, migrations and the start-up check."""
