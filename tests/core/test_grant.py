"""`controltower grant-readonly`: the dashboard's role reads everything and writes nothing else."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from controltower.db import make_engine
from wiring.cli import main


def test_readonly_role_reads_but_cannot_write(engine, database_url, monkeypatch):
    role = f"ct_dash_{uuid.uuid4().hex[:6]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-for-test'"))  # noqa: S608 (test role name)
    try:
        monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
        main(["grant-readonly", role])  # returns normally on success
        url = sa.engine.make_url(database_url).set(username=role, password="pw-for-test")
        reader = make_engine(url.render_as_string(hide_password=False))
        with reader.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar() == 0
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("DELETE FROM events"))
        reader.dispose()
        with pytest.raises(SystemExit) as missing:
            main(["grant-readonly", "no_such_role_x"])
        assert missing.value.code == 1
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP OWNED BY {role}; DROP ROLE {role}"))  # noqa: S608
