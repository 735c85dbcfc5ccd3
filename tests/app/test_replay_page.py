"""The Replay page under AppTest: lists requests, refuses approval by the requester, approves by another."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collectors.store import EventStore
from controltower import replayops
from controltower.replayconfig import loads_replay
from controltower.settings import Settings
from tests.app.test_dashboard import app_env, plain, run  # noqa: F401, F811 (fixtures)

CONFIG = loads_replay("replay:\n  flows:\n    refund: {produces: return.refund_posted}\n", "taps.yaml")


def test_replay_page_approves_only_by_a_second_person(
    engine: Engine, settings: Settings, app_env: None,  # noqa: F811 (the fixture)
) -> None:
    now = datetime.now(UTC)
    EventStore(engine, settings).ingest([
        {"event_id": "e-1", "occurred_at": (now - timedelta(minutes=3)).isoformat(), "correlation_id": "c-ret",
         "channel": "amazon", "flow": "refund", "stage": "refund_posted", "status": "dead_letter",
         "system": "middleware"}], source="tap:erp", now=now)
    plan = replayops.request_replay(engine, config=CONFIG, correlation_ids=["c-ret"], by="dana", now=now)
    request_id = plan.items[0].id
    at = run("views/replay.py")
    table = next(d.value for d in at.dataframe if "requested_by" in d.value.columns)
    assert list(table["status"]) == ["requested"] and list(table["requested_by"]) == ["dana"]

    at.text_input(key="who").set_value("dana")
    at.selectbox(key="approve_pick").set_value(request_id)
    at.button(key="approve").click().run()
    assert any("a second, different person must approve" in plain(w.value) for w in at.warning)

    at.text_input(key="who").set_value("lee")
    at.button(key="approve").click().run()
    assert not at.exception
    with engine.connect() as conn:
        status, by = conn.execute(sa.text("SELECT status, approved_by FROM replay_requests")).one()
    assert (status, by) == ("approved", "lee")
