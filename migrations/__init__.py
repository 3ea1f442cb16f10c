"""Alembic migrations for the profile schema (installed as profile_service.migrations)."""
