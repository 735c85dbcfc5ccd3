"""The Exceptions page with junk in its URL and markup in the failures it shows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.escaping import md
from tests.app.test_dashboard import app_env, run  # noqa: F401  (app_env is a fixture)
from tests.metrics.helpers import NOW, ingest, minutes
from tests.metrics.test_exceptions_grouping import failed, tick


def test_junk_ids_and_filters_are_no_group_not_a_crash(engine, settings, app_env: Any) -> None:  # noqa: F811
    ingest(engine, settings, [failed("j1", "order.erp_posted", NOW - minutes(5), "ERP timed out")])
    tick(engine, NOW)
    for junk in ("²", "١٢", str(2**70), "-1", "<b>x</b>", "0"):
        at = run("views/exceptions.py", id=junk)  # run() fails on any exception
        assert any("No exception group" in w.value for w in at.warning), junk
    at = run("views/exceptions.py", state="<script>", channel="**x**", assignee="[a](javascript:x)")
    assert not at.exception


def test_markup_in_a_failure_is_shown_as_text(engine, settings, app_env: Any) -> None:  # noqa: F811
    message = "**Refund now** [click](javascript:alert(1)) <img src=x onerror=alert(1)>"
    ingest(engine, settings, [failed("m1", "order.erp_posted", NOW - minutes(5), message)])
    tick(engine, NOW)
    with engine.connect() as conn:
        gid = conn.execute(sa.text("SELECT id FROM exception_groups")).scalar_one()
    at = run("views/exceptions.py", id=str(gid))
    [title] = [s.value for s in at.subheader if s.value.startswith(f"#{gid}")]
    assert title == f"#{gid} · {md(message)}"  # every markup character escaped: shown as typed
