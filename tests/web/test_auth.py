"""#10 finding 1: once any key has ever existed, requests without a valid key get 401 for good."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
from typer.testing import CliRunner

from controltower import apikeys
from tests.web.helpers import record


def _reload(collector) -> None:
    collector.server.config.app.state.web.keys.invalidate()


def test_open_until_a_key_exists_then_closed_even_after_the_last_is_revoked(collector, engine):
    url = collector.url + "/v1/events"
    assert httpx.post(url, json=[record("open-1")]).status_code == 200  # no key ever: open
    token = apikeys.create(engine, "only", ("ingest", "read"))
    _reload(collector)
    assert httpx.post(url, json=[record("k-1")]).status_code == 401
    assert httpx.post(url, json=[record("k-2")], headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert apikeys.revoke(engine, "only", now=datetime.now(UTC)) == 1
    _reload(collector)
    for path, method in (("/v1/events", "POST"), ("/v1/traces", "POST"), ("/v1/transactions?q=x", "GET"),
                         ("/v1/transactions/C-k-2", "GET"), ("/v1/sla", "GET"), ("/v1/alerts", "GET"),
                         ("/v1/alerts/abc/ack", "POST"), ("/metrics", "GET")):
        for headers in ({}, {"authorization": f"Bearer {token}"}):
            r = httpx.request(method, collector.url + path, headers={"content-type": "application/json", **headers},
                              content=b"[]" if method == "POST" else None)
            assert r.status_code == 401, (path, headers, r.status_code, r.text)
            assert "API key" in r.json()["error"]


def test_closed_after_the_last_key_expires(collector, engine):
    apikeys.create(engine, "short", ("ingest",), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    _reload(collector)
    assert httpx.post(collector.url + "/v1/events", json=[record("e-1")]).status_code == 401
    assert httpx.get(collector.url + "/v1/transactions", params={"q": "x"}).status_code == 401


def test_unauthorized_requests_are_counted(collector, engine):
    apikeys.create(engine, "a", ("ingest",))
    _reload(collector)
    for _ in range(3):
        assert httpx.post(collector.url + "/v1/events", json=[record("u")]).status_code == 401
    web = collector.server.config.app.state.web
    assert web.refusals.value("unauthorized") == 3
    assert httpx.get(collector.url + "/v1/alerts").headers["www-authenticate"].startswith("Bearer")


def test_keys_list_shows_expired_and_revoked(engine, database_url, tmp_path):
    from wiring.cli import app

    apikeys.create(engine, "live", ("ingest",))
    apikeys.create(engine, "lapsed", ("ingest",), expires_at=datetime.now(UTC) - timedelta(days=1))
    apikeys.create(engine, "gone", ("read",))
    apikeys.revoke(engine, "gone", now=datetime.now(UTC))
    out = CliRunner().invoke(app, ["--database-url", database_url, "--data-dir", str(tmp_path), "keys", "list"])
    assert out.exit_code == 0, out.output
    states = {line.split()[0]: line.split()[3] for line in out.output.splitlines() if "ct_" in line}
    assert states == {"live": "active", "lapsed": "expired", "gone": "revoked"}


def test_key_state_table():
    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert apikeys.key_state({"revoked_at": None, "expires_at": None}, now=now) == "active"
    assert apikeys.key_state({"revoked_at": None, "expires_at": now}, now=now) == "expired"
    assert apikeys.key_state({"revoked_at": None, "expires_at": now + timedelta(seconds=1)}, now=now) == "active"
    assert apikeys.key_state({"revoked_at": now, "expires_at": now - timedelta(days=1)}, now=now) == "revoked"


def test_keys_create_refuses_lifetimes_that_are_expired_overflowing_or_not_ascii(engine, database_url, tmp_path):
    """`--expires 0s` made a key dead on arrival; `1e9d` crashed with OverflowError; `١h` passed."""
    from wiring.cli import app

    for expires, said in (("0s", "already expired"), ("1e9d", "longer than the longest allowed duration"), ("١h", "not a duration"),
                          ("1_0h", "not a duration")):
        out = CliRunner().invoke(app, ["--database-url", database_url, "--data-dir", str(tmp_path),
                                       "keys", "create", "k", "--expires", expires])
        told = out.output + str(out.exception or "")  # ConfigError is printed by the console entry point
        assert out.exit_code != 0 and said in told, (expires, told)
        assert not isinstance(out.exception, OverflowError)
    assert apikeys.list_keys(engine) == []


def test_two_authorization_headers_name_no_key(collector, engine):
    """With the valid key first and junk second the first copy counted (a proxy may check the last)."""
    token = apikeys.create(engine, "w", ("ingest",))
    _reload(collector)
    body = json.dumps([record("two-auth")]).encode()
    for pair in ((f"Bearer {token}", "Bearer nope"), ("Bearer nope", f"Bearer {token}"),
                 (f"Bearer {token}", f"Bearer {token}")):
        headers = [("content-type", "application/json"), *(("authorization", value) for value in pair)]
        assert httpx.post(collector.url + "/v1/events", headers=headers, content=body).status_code == 401, pair
    headers = [("content-type", "application/json"), ("x-api-key", token), ("x-api-key", "nope")]
    assert httpx.post(collector.url + "/v1/events", headers=headers, content=body).status_code == 401
    headers = [("content-type", "application/json"), ("authorization", f"Bearer {token}")]
    assert httpx.post(collector.url + "/v1/events", headers=headers, content=body).status_code == 200
