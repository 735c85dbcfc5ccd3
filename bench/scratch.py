"""The scratch database every benchmark creates beside the server's others and drops after."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from controltower.db import make_engine, normalize_url


def server_url(database_url: str | None) -> str:
    """The server to benchmark on: `database_url`'s, else an embedded PostgreSQL in a temp folder."""
    if database_url:
        return normalize_url(database_url)
    import tempfile
    from pathlib import Path

    import pgserver

    return normalize_url(pgserver.get_server(Path(tempfile.mkdtemp()) / "pgdata", cleanup_mode="delete").get_uri())


def create(server_url: str, prefix: str) -> tuple[sa.Engine, str, str]:
    """A new empty database on the server: (admin engine, its name, its URL)."""
    admin = make_engine(normalize_url(server_url))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return admin, name, admin.url.set(database=name).render_as_string(hide_password=False)


def drop(admin: sa.Engine, name: str) -> None:
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
