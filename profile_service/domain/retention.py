"""How long soft-deleted profiles are kept: the bounds every layer shares (the settings, the
Purge checks, the CLI), in one place."""

# The GDPR grace period the database itself enforces (policy purge_expired_profiles_service,
# migration 0001; decision 8): nothing the service asks can purge sooner.
DATABASE_PURGE_FLOOR_DAYS = 30
# A century: beyond some such bound `now() - interval` leaves PostgreSQL's timestamp range.
PURGE_MAX_RETENTION_DAYS = 36_500
