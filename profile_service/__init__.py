"""Profile Service: one training profile per user, over gRPC, guarded by PostgreSQL RLS."""
