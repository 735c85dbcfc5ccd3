"""Shared fixtures: one real PostgreSQL per test session, a clean database for every test.

The server is the one at CONTROLTOWER_TEST_DATABASE_URL when set (any database on it; a fresh
database is created beside it for the session), else an embedded PostgreSQL from pgserver in
a temporary folder. Tables are truncated between tests (partitions are kept).

CONTROLTOWER_TEST_CITUS_URL (opt-in) names a Citus coordinator instead: the session database
is created on the coordinator and on every worker it knows, with the extension, the nodes and
`controltower migrate --distributed` applied, and only the directories in CITUS_SUITES run
(the store, metrics, alerts and retention tests; the rest is marked single-node).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controltower import migrate
from controltower.db import make_engine, normalize_url
from controltower.schema import metadata
from controltower.settings import Settings

CITUS_URL = os.environ.get("CONTROLTOWER_TEST_CITUS_URL")
CITUS_SHARDS = 4  # few shards: each test truncates every table, and a TRUNCATE visits every shard
# what the opt-in Citus mode runs (paths under tests/)
CITUS_SUITES = ("collectors", "core", "metrics", "alerts", "web")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not CITUS_URL:
        return
    root = os.path.dirname(__file__)
    skip = pytest.mark.skip(reason="single-node suite: not part of the Citus mode")
    for item in items:
        rel = os.path.relpath(str(item.path), root)
        if rel.split(os.sep, 1)[0] not in CITUS_SUITES or item.get_closest_marker("single_node"):
            item.add_marker(skip)


def _admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if CITUS_URL:
        return normalize_url(CITUS_URL)
    configured = os.environ.get("CONTROLTOWER_TEST_DATABASE_URL")
    if configured:
        return normalize_url(configured)
    import pgserver

    folder = tmp_path_factory.mktemp("pg") / "pgdata"
    server = pgserver.get_server(folder, cleanup_mode="delete")
    return normalize_url(server.get_uri())


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin_url = _admin_url(tmp_path_factory)
    name = f"ct_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    workers: list[str] = []
    if CITUS_URL:
        from controltower import distribute

        workers = distribute.create_database(admin_url, name)
    else:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    if CITUS_URL:
        from controltower import distribute

        distribute.drop_database(admin_url, workers, name)
    else:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=4)
    migrate.upgrade(engine)
    if CITUS_URL:
        from controltower import distribute

        distribute.distribute(engine, shard_count=CITUS_SHARDS)
    yield engine
    engine.dispose()


def truncate_all(engine: Engine) -> None:
    from controltower import distribute

    tables = [t.name for t in metadata.sorted_tables]
    with engine.connect() as conn:
        if distribute.has_members(conn):  # a cluster's member lists (not in the metadata: made by distribute)
            tables.append(distribute.MEMBERS)
    names = ", ".join(f'"{t}"' for t in tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


def mirror_members(conn: sa.Connection) -> None:
    """On a cluster, give transactions a test wrote straight into the table their member rows
    (what ingest does for its own); nothing on one server."""
    from controltower import distribute

    if distribute.has_members(conn):
        conn.execute(sa.text(distribute.MEMBERS_FILL))


def members_disagree(engine: Engine) -> list[tuple[str, str, str]]:
    """On a cluster, how business_members differs from transactions' (business_id, correlation_id)
    pairs: ('missing' | 'extra', business_id, correlation_id) rows; empty when they agree (and on
    one server)."""
    from controltower import distribute

    with engine.connect() as conn:
        if not distribute.has_members(conn):
            return []
        truth = set(conn.execute(sa.text("SELECT business_id, correlation_id FROM transactions")).tuples())
        kept = set(conn.execute(sa.text(f"SELECT business_id, correlation_id FROM {distribute.MEMBERS}")).tuples())  # noqa: S608
    return sorted([("missing", *p) for p in truth - kept] + [("extra", *p) for p in kept - truth])


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    truncate_all(migrated_engine)
    yield migrated_engine
    # on a cluster, every test also checks that the member lists followed every write it made
    assert members_disagree(migrated_engine) == []


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:
    return Settings.load(
        {"database_url": database_url, "data_dir": tmp_path / "data"}, environ={}
    )


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


class LoopbackServer:
    """A real uvicorn server on a free loopback port, run in a background thread."""

    def __init__(self, app: object) -> None:
        import socket
        import threading

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LoopbackServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def collector(engine: Engine, settings: Settings) -> Iterator[LoopbackServer]:
    """The real collector app (every room's routes) on loopback, over the test database."""
    from controltower.context import AppContext
    from wiring.server import build_app

    context = AppContext(settings, engine)
    with LoopbackServer(build_app(context)) as server:
        yield server
