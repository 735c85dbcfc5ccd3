"""The Alerts page says how fresh alerting is: "Last evaluation N s ago (every X s)"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.shaping import evaluation_line
from tests.app.test_dashboard import app_env, run, seeded  # noqa: F401 - fixtures used by name

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_evaluation_line_wording():
    assert evaluation_line({"last_success_at": NOW - timedelta(seconds=42), "interval_seconds": 30.0}, NOW) == \
        "Last evaluation 42 s ago (every 30 s)."
    assert evaluation_line({"last_success_at": NOW - timedelta(minutes=3), "interval_seconds": 300.0}, NOW) == \
        "Last evaluation 3 min ago (every 5 min)."
    assert evaluation_line({"last_success_at": None, "interval_seconds": 5.0}, NOW).startswith(
        "No alert evaluation has completed yet (every 5 s")


def test_alerts_page_shows_the_last_evaluation(seeded: dict[str, Any], engine: Engine) -> None:  # noqa: F811
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alert_evaluations SET last_success_at = now() - interval '12 seconds', "
                             "interval_seconds = 5 WHERE rule = ''"))
    at = run("views/alerts.py")
    captions = [c.value.replace("\\", "") for c in at.caption]  # md() escapes the text for Markdown
    assert any(re.fullmatch(r"Last evaluation 1[2-4] s ago \(every 5 s\)\.", c) for c in captions), captions
