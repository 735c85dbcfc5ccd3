"""Collector CLI: search finds what was stored under a masked identifier."""

from __future__ import annotations


def test_search_finds_an_order_by_the_email_its_id_was_masked_from(engine, settings, monkeypatch):
    import json
    from datetime import UTC, datetime

    from typer.testing import CliRunner

    from collectors.store import EventStore
    from controltower.masking import Masker
    from wiring.cli import app

    now = datetime.now(UTC)
    record = {"event_id": "s1", "occurred_at": now.isoformat(), "correlation_id": "jane@example.com",
              "order_id": "jane@example.com", "channel": "shopify", "flow": "order", "stage": "received"}
    assert EventStore(engine, settings, Masker()).ingest([record], source="test", now=now).accepted == 1
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    result = CliRunner().invoke(app, ["search", "--json", "jane@example.com"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["results"][0]["correlation_id"] == Masker().mask_identifier("jane@example.com")
    assert "jane@example.com" not in result.output


def test_http_search_and_transaction_find_an_order_by_the_email_its_id_was_masked_from(engine, settings):
    from datetime import UTC, datetime

    import httpx

    from controltower.context import AppContext
    from controltower.masking import Masker
    from tests.conftest import LoopbackServer
    from wiring.server import build_app

    now = datetime.now(UTC)
    record = {"event_id": "s1", "occurred_at": now.isoformat(), "correlation_id": "jane@example.com",
              "order_id": "jane@example.com", "channel": "shopify", "flow": "order", "stage": "received"}
    token = Masker().mask_identifier("jane@example.com")
    with LoopbackServer(build_app(AppContext(settings, engine))) as server:
        assert httpx.post(server.url + "/v1/events", json=[record]).json()["accepted"] == 1
        found = httpx.get(server.url + "/v1/transactions", params={"q": "jane@example.com"}).json()
        one = httpx.get(server.url + "/v1/transactions/jane@example.com")
    assert [r["correlation_id"] for r in found["results"]] == [token]
    assert one.status_code == 200 and one.json()["correlation_id"] == token
    assert "jane@example.com" not in one.text


def test_search_with_a_key_that_is_not_utf8_says_so(engine, monkeypatch):
    """argv bytes that are not UTF-8 (surrogates in Python) crashed search with UnicodeEncodeError."""
    from typer.testing import CliRunner

    from wiring.cli import app

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    result = CliRunner().invoke(app, ["search", "--", "\udcff\udcfeab"])
    assert result.exit_code == 1 and not isinstance(result.exception, UnicodeError)
    assert "not valid UTF-8, so nothing stored can match it" in result.output
