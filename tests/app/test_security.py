"""Personal data sent through the API never shows unmasked in the database, the collector's logs
or the dashboard; script-injection strings are shown as text."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from tests.app.test_dashboard import app_env, run  # noqa: F401  (fixture and helper)

EMAIL, PHONE, NAME, STREET = "jane.doe@example.com", "+1 206 555 0143", "Jane Doe", "12 Main Street"
SCRIPT = "<script>alert('x')</script>"


def test_pii_masked_everywhere_and_scripts_inert(collector, engine, app_env, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC).replace(microsecond=0)
    record = {
        "event_id": "sec-1", "occurred_at": now.isoformat(), "correlation_id": "C-sec", "order_id": f"SO-{SCRIPT}",
        "channel": "shopify", "flow": "order", "stage": "received", "error_message": f"bounced for {EMAIL}",
        "attributes": {"external_order_id": "#7001", "customer_email": EMAIL, "note": SCRIPT},
        "payload": {"customer": {"name": NAME, "phone": PHONE, "email": EMAIL,
                                 "shipping_address": {"address1": STREET, "city": "Seattle"}}},
    }
    assert httpx.post(collector.url + "/v1/events", json=[record]).json()["accepted"] == 1
    assert httpx.post(collector.url + "/v1/events", json=[record | {"occurred_at": "yesterday"}]).status_code == 400

    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT row_to_json(e)::text FROM events e")).scalar_one()
        keys = " ".join(v for (v,) in conn.execute(sa.text("SELECT value FROM transaction_keys")))
    logs = caplog.text
    at = run("views/transaction.py", q="#7001")
    page = " ".join(str(getattr(e, "value", "")) for e in at.main) + " ".join(
        df.value.to_string() for df in at.dataframe)
    for secret in (EMAIL, PHONE, "555 0143", NAME, STREET):
        assert secret not in stored, secret
        assert secret not in keys and secret not in logs, secret
        assert secret not in page, secret
    assert "Seattle" in stored and "#7001" in page
    # the script is data: stored verbatim, never rendered as HTML by the dashboard
    assert SCRIPT in stored
    html = [m.value for m in at.markdown if m.proto.allow_html]
    assert any("SO-&lt;script&gt;" in h for h in html)  # the HTML header card escapes it
    assert not any("<script>" in h for h in html)
