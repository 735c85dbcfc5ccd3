"""Hostile values from events and from the URL are shown as text on every page (AppTest against a
real Postgres): no Markdown link or image, no HTML element made of them, no code span broken out
of, and generated query parameters never crash a page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from collectors.store import EventStore
from controltower.settings import Settings
from tests.app.test_dashboard import app_env, plain, run, seed  # noqa: F401  (fixture)
from tests.app.test_safety import EVIL, rendered_link

STATIC_LINKS = ("([all alerts](alerts))",)  # the dashboard's own links, not data
BACKTICK_KEY = "EXT-`](https://evil.example/k)`"
HYPERLINK = '=HYPERLINK("https://evil.example/x","Refund")'
SESSION = "[Your session expired](https://evil.example/sso)"
PAGES = (None, "views/breaches.py", "views/channel.py", "views/transaction.py", "views/reconciliation.py",
         "views/inventory.py", "views/alerts.py")


def markdown_bodies(at: AppTest) -> list[str]:
    """Every element body Streamlit renders as Markdown (HTML-enabled ones are checked as HTML)."""
    bodies = [m.value for m in at.markdown if not m.proto.allow_html]
    for kind in (at.caption, at.info, at.warning, at.error, at.success, at.title, at.subheader):
        bodies += [e.value for e in kind]
    bodies += [e.label for e in at.expander] + [m.label for m in at.metric]
    bodies += [str(m.proto.help) for m in at.metric if m.proto.help]
    return bodies


def html_bodies(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.proto.allow_html] + [h.proto.body for h in at.html]


def assert_inert(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for body in markdown_bodies(at):
        for static in STATIC_LINKS:
            body = body.replace(static, "")
        assert not rendered_link(body), body
    for body in html_bodies(at):
        assert not re.search(r"<(a|img|script|iframe)\b", body, re.IGNORECASE), body
        assert "evil.example" not in body or "href=" not in body


def page_text(at: AppTest) -> str:
    return "\n".join(plain(b) for b in markdown_bodies(at)) + "\n".join(html_bodies(at))


def _event(cid: str, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC) - timedelta(minutes=30)
    return {"event_id": f"{cid}-e", "occurred_at": now.isoformat(), "correlation_id": cid, "channel": "walmart",
            "flow": "order", "stage": "received", "status": "ok", "system": "marketplace", **fields}


@pytest.fixture
def hostile(engine: Engine, settings: Settings, app_env: None) -> dict[str, Any]:  # noqa: F811
    facts = seed(engine, settings, datetime.now(UTC))
    records = [
        _event("cid-evil", order_id=HYPERLINK, status="error", error_code="E`1",
               error_message=EVIL, attributes={"external_order_id": BACKTICK_KEY}),
        _event("x&id=other#", order_id="SO-AMPERSAND"),
        _event("other", order_id="SO-OTHER"),
    ]
    result = EventStore(engine, settings).ingest(records, source="test", now=datetime.now(UTC))
    assert result.accepted == len(records), result.rejected
    return facts


def test_event_values_render_as_text_on_the_transaction_page(hostile: dict[str, Any]) -> None:
    at = run("views/transaction.py", q=BACKTICK_KEY)
    assert_inert(at)
    text = page_text(at)
    assert "Re-authenticate here" in text and "evil.example/login" in text  # shown, as text
    keys = next(b for b in html_bodies(at) if "External order id" in b)
    assert "<code>EXT-`](https://evil.example/k)`</code>" in keys  # the value stays inside its code element
    error = next(e.value for e in at.error)
    assert plain(error).endswith(EVIL) and not rendered_link(error)
    assert "=HYPERLINK" in next(b for b in html_bodies(at) if "correlation id" in b)


def test_search_text_in_the_url_is_not_a_link(hostile: dict[str, Any]) -> None:
    at = run("views/transaction.py", q=SESSION)
    assert_inert(at)
    warning = next(w.value for w in at.warning)
    assert SESSION in plain(warning) and not rendered_link(warning)


def test_deep_link_opens_exactly_the_encoded_correlation_id(hostile: dict[str, Any]) -> None:
    at = run("views/transaction.py", id="x&id=other#")
    assert_inert(at)
    header = next(b for b in html_bodies(at) if "correlation id" in b)
    assert "SO-AMPERSAND" in header and "x&amp;id=other#" in header and "SO-OTHER" not in header
    at = run("views/transaction.py", correlation_id="other")  # the old parameter name still works
    assert "SO-OTHER" in next(b for b in html_bodies(at) if "correlation id" in b)


def test_every_page_is_inert_with_hostile_parameters(hostile: dict[str, Any]) -> None:
    for page in PAGES:
        at = run(page, q=SESSION, id=EVIL, channel=SESSION, sla="<img src=https://evil.example/p.png>",
                 day="9999-12-31")
        assert_inert(at)


HOSTILE = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(categories=["Cf", "Zs", "Sm", "Po", "Ps", "Pe"]), max_size=40),
    st.sampled_from([EVIL, SESSION, BACKTICK_KEY, HYPERLINK, "<script>alert(1)</script>", "ｗｗｗ．evil．example",
                     "a\u200b](https://evil.example)", "\x00", "0001-01-01", "9999-12-31", "1h", "24h",
                     "x" * 100_000, "[" * 5000, "`" * 1000, "$$x$$", ":material/warning:"]),
)


@given(page=st.sampled_from(PAGES), q=HOSTILE, cid=HOSTILE, channel=HOSTILE, extra=HOSTILE)
@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_query_parameters_never_crash_or_link(hostile: dict[str, Any], page: str | None, q: str, cid: str,
                                                         channel: str, extra: str) -> None:
    at = run(page, q=q, id=cid, channel=channel, sla=extra, day=extra, window=extra)
    assert_inert(at)
