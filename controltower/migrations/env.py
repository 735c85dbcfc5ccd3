"""Alembic environment: runs migrations on the connection `controltower.migrate` hands in."""

from alembic import context

from controltower.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
