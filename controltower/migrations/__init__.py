"""Alembic migrations: the versioned schema. Each room owns a branch (`upgrade heads`)."""
