"""Alembic environment: runs migrations online against DATABASE_URL (as the schema owner)."""

import os

from alembic import context
from sqlalchemy import create_engine, pool

from profile_service.storage.migrate import sqlalchemy_url

config = context.config


def run_migrations_online() -> None:
    """Run every pending migration in one transaction per revision."""
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) mode is not supported; RLS SQL is written by hand")
run_migrations_online()
