"""The home page's hop strip shows the queue sitting at a hop: its DLQ state from the queue SLAs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controltower.schema.brokers import queue_samples
from metrics import definitions, jobs
from tests.app.test_dashboard import app_env, html_with, run  # noqa: F401 (fixture)

WARN = "#bf8700"


def test_hop_strip_names_the_dead_letter_queue_and_turns_the_hop(engine: Engine, app_env: None) -> None:  # noqa: F811
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [{"queue": "erp.orders.dlq", "at": now - timedelta(minutes=m), "kind": "dlq", "broker": "rabbitmq",
             "channel": "amazon", "hop": "ERP posting", "depth": 0 if m == 13 else 3, "oldest_age_ms": None}
            for m in range(13, -1, -1)]
    rows.append({"queue": "erp.orders", "at": now, "kind": "queue", "broker": "rabbitmq", "channel": "amazon",
                 "hop": "ERP posting", "depth": 40, "oldest_age_ms": 5000})
    with engine.begin() as conn:
        conn.execute(sa.insert(queue_samples), rows)
    jobs.refresh(engine, definitions.load(), now)

    at = run()
    strip = html_with(at, "ERP posting")
    chip = strip.split("ERP posting")[0].rsplit('<div title="', 1)[1] + "ERP posting" + strip.split("ERP posting")[1].split("</div></div>")[0]
    # non-empty since 12 min ago (the first sample after the last empty one): past the 10 min target
    assert chip.startswith("DLQ erp.orders.dlq: 3 messages for 12 min (max 10 min)")  # the tooltip
    assert f"border-top:5px solid {WARN}" in chip
    assert chip.count("DLQ erp.orders.dlq: 3 messages for 12 min (max 10 min)") == 2  # tooltip and label
    # the other hops of the strip are untouched
    ack = strip.split("Acknowledgement")[0].rsplit('<div title="', 1)[1]
    assert ack.startswith("ok")
