"""Database connection: the configured PostgreSQL, or an embedded one from `pgserver`.

Owns URL resolution and engine creation. It runs no queries of its own beyond a ping, and
does not know any table: the schema lives in `controltower.schema`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controltower.errors import ConfigError, StorageUnavailable
from controltower.settings import Settings

log = logging.getLogger(__name__)

_embedded: dict[Path, Any] = {}


def normalize_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+psycopg:// and use the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ConfigError(
        f'CONTROLTOWER_DATABASE_URL: "{url.split("@")[-1]}" is not a PostgreSQL URL '
        "(expected postgresql+psycopg://user:password@host:port/database)"
    )


def embedded_url(data_dir: Path, *, stop_on_exit: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir/pgdata` and return its URL.

    The server outlives this process unless `stop_on_exit`: the collector, scheduler and
    dashboard are separate processes sharing one data folder, and the demo stops it last.
    """
    pgdata = (data_dir / "pgdata").resolve()
    if pgdata not in _embedded:
        import pgserver

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop" if stop_on_exit else None)
        except Exception as exc:  # pgserver raises bare subprocess/OS errors; name the folder
            raise StorageUnavailable(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}"
            ) from exc
        _embedded[pgdata] = server
    uri: str = _embedded[pgdata].get_uri()
    return normalize_url(uri)


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server of `data_dir` if it runs; True when one was stopped."""
    pgdata = (data_dir / "pgdata").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    import pgserver

    server = _embedded.pop(pgdata, None) or pgserver.get_server(pgdata, cleanup_mode=None)
    from pgserver._commands import pg_ctl  # type: ignore[import-untyped]  # created at import, one per binary

    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=server.system_user)
    except Exception as exc:  # already stopping or stopped: nothing left to do
        log.info("embedded postgres stop: %s", exc)
        return False
    return True


def resolve_url(settings: Settings) -> str:
    if settings.database_url:
        return normalize_url(settings.database_url)
    return embedded_url(settings.data_dir)


def make_engine(url: str, *, pool_size: int = 5, application_name: str = "controltower") -> Engine:
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
    )


def engine_from_settings(settings: Settings, *, pool_size: int = 5, application_name: str = "controltower") -> Engine:
    return make_engine(resolve_url(settings), pool_size=pool_size, application_name=application_name)


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    except sa.exc.InterfaceError:
        return False


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that mean 'the database is not reachable', as opposed to a bad query."""
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    import psycopg

    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return True
    return bool(isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow))


def redact(url: str) -> str:
    """The URL without its password, fit for a log line."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is still not printed with its secret
        return "<database url>"
