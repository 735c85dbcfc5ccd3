"""`GET /v1/identity/orphans|duplicates|hubs` over real HTTP and `controltower identity ...` (real Postgres)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from controltower import apikeys
from metrics import definitions, signals
from tests.metrics.test_signals import event, ingest
from wiring.cli import app


def seed(engine, settings) -> datetime:
    """Two orphans (a carrier scan, an ERP posting), one duplicate order, two hubs; returns now."""
    now = datetime.now(UTC).replace(microsecond=0)
    at = now - timedelta(minutes=45)
    ingest(engine, settings, [
        event("CAR-1", "shipment.first_scan", at, system="carrier", tracking_number="1Z999AA1"),
        event("ERP-2", "order.erp_posted", at + timedelta(minutes=1), system="erp", channel="ebay", erp_document="4500002"),
        event("O-1", "order.received", at, system="marketplace", channel="amazon", order_id="SO-1", external_order_id="112-1"),
        event("E-1a", "order.erp_posted", at + timedelta(minutes=2), system="erp", channel="amazon",
              external_order_id="112-1", erp_document="4500011"),
        event("E-1b", "order.erp_posted", at + timedelta(minutes=3), system="erp", channel="amazon",
              external_order_id="112-1", erp_document="4500012"),
    ], now=at + timedelta(minutes=4))
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO identity_hubs (kind, value, fanout, first_seen_at, last_seen_at) VALUES"
            " ('tracking_number', 'PENDING', 40, :a, :b), ('erp_document', 'DEFAULT', 25, :a, :a)"), {"a": at, "b": now})
    signals.refresh(engine, definitions.load(), now, settings)
    return now


def get(collector, path, **params):
    return httpx.get(collector.url + path, params=params)


def test_identity_endpoints_list_orphans_duplicates_and_hubs(collector, engine, settings):
    seed(engine, settings)
    body = get(collector, "/v1/identity/orphans").json()
    assert [(o["correlation_id"], o["system"], o["channel"]) for o in body["orphans"]] == [
        ("ERP-2", "erp", "ebay"), ("CAR-1", "carrier", "unknown")]
    assert body["orphans"][1]["keys"] == {"tracking_number": ["1Z999AA1"]}
    assert 45 * 60_000 <= body["orphans"][1]["age_ms"] < 46 * 60_000
    assert body["counts"] == [{"system": "carrier", "channel": "unknown", "orphans": 1},
                              {"system": "erp", "channel": "ebay", "orphans": 1}]
    assert (body["grace_ms"], body["limit"], body["offset"], body["next_offset"]) == (900_000, 100, 0, None)
    assert body["as_of"].endswith("Z")
    page = get(collector, "/v1/identity/orphans", limit=1).json()
    assert [o["correlation_id"] for o in page["orphans"]] == ["ERP-2"] and page["next_offset"] == 1
    page = get(collector, "/v1/identity/orphans", limit=1, offset=1).json()
    assert [o["correlation_id"] for o in page["orphans"]] == ["CAR-1"] and page["next_offset"] is None
    unknown = get(collector, "/v1/identity/orphans", channel="unknown", system="carrier").json()["orphans"]
    assert [o["correlation_id"] for o in unknown] == ["CAR-1"]

    [duplicate] = get(collector, "/v1/identity/duplicates").json()["duplicates"]
    assert (duplicate["correlation_id"], duplicate["correlation_ids"], duplicate["order_id"], duplicate["erp_documents"]) == (
        "O-1", ["O-1", "E-1a", "E-1b"], "SO-1", ["4500011", "4500012"])
    assert get(collector, "/v1/identity/duplicates", channel="ebay").json()["duplicates"] == []

    hubs = get(collector, "/v1/identity/hubs").json()["hubs"]
    assert [(h["kind"], h["value"], h["fanout"]) for h in hubs] == [("tracking_number", "PENDING", 40),
                                                                     ("erp_document", "DEFAULT", 25)]
    assert [h["value"] for h in get(collector, "/v1/identity/hubs", kind="erp_document").json()["hubs"]] == ["DEFAULT"]


@pytest.mark.parametrize(("path", "params", "said"), [
    ("/v1/identity/orphans", {"limit": "0"}, "limit: 0 is not an integer from 1 to 500"),
    ("/v1/identity/orphans", {"limit": "501"}, "limit: 501 is not an integer from 1 to 500"),
    ("/v1/identity/orphans", {"limit": "ten"}, "limit: 'ten' is not an integer"),
    ("/v1/identity/orphans", {"limit": ""}, "limit: '' is not an integer"),
    ("/v1/identity/orphans", {"limit": "٣"}, "limit: '٣' is not an integer"),
    ("/v1/identity/orphans", {"offset": "-1"}, "offset: '-1' is not an integer"),
    ("/v1/identity/orphans", {"offset": "100001"}, "offset: 100001 is not an integer from 0 to 100000"),
    ("/v1/identity/orphans", {"channel": "Amazon"}, "channel: 'Amazon' is not a channel name"),
    ("/v1/identity/orphans", {"system": "<script>"}, "system: '<script>' is not a system name"),
    ("/v1/identity/orphans", {"kind": "rma"}, "unknown query parameter 'kind' (expected limit, offset, channel, system)"),
    ("/v1/identity/duplicates", {"system": "erp"}, "unknown query parameter 'system' (expected limit, offset, channel)"),
    ("/v1/identity/hubs", {"kind": "a b"}, "kind: 'a b' is not a key name"),
    ("/v1/identity/hubs", {"channel": "amazon"}, "unknown query parameter 'channel'"),
])
def test_bad_query_parameters_are_400_with_the_reason(collector, path, params, said):
    response = get(collector, path, **params)
    assert response.status_code == 400 and said in response.json()["error"], response.text


def test_a_repeated_parameter_is_400(collector):
    response = httpx.get(collector.url + "/v1/identity/hubs?limit=1&limit=2")
    assert response.status_code == 400 and response.json()["error"] == "limit: given more than once"


def test_identity_endpoints_need_the_read_scope(collector, engine):
    ingest_only = apikeys.create(engine, "ingest-only", ("ingest",))
    reader = apikeys.create(engine, "reader", ("read",))
    collector.server.config.app.state.web.keys.invalidate()
    for path in ("/v1/identity/orphans", "/v1/identity/duplicates", "/v1/identity/hubs"):
        assert httpx.get(collector.url + path).status_code == 401
        assert httpx.get(collector.url + path, headers={"authorization": f"Bearer {ingest_only}"}).status_code in (401, 403)
        assert httpx.get(collector.url + path, headers={"authorization": f"Bearer {reader}"}).status_code == 200


def cli(database_url, tmp_path, *args):
    return CliRunner().invoke(app, ["--database-url", database_url, "--data-dir", str(tmp_path), "identity", *args])


def test_identity_commands_print_tables_and_json(engine, settings, database_url, tmp_path):
    seed(engine, settings)
    out = cli(database_url, tmp_path, "orphans")
    assert out.exit_code == 0, out.output
    assert "2 orphans (system/channel: carrier/unknown 1, erp/ebay 1)" in out.output
    assert "tracking_number=1Z999AA1" in out.output and "ERP-2" in out.output
    listed = json.loads(cli(database_url, tmp_path, "orphans", "--json", "--system", "carrier").output)
    assert [o["correlation_id"] for o in listed["orphans"]] == ["CAR-1"] and len(listed["counts"]) == 2
    out = cli(database_url, tmp_path, "duplicates")
    assert out.exit_code == 0 and "4500011, 4500012" in out.output and "O-1, E-1a, E-1b" in out.output
    hubs = json.loads(cli(database_url, tmp_path, "hubs", "--json", "--limit", "1").output)["hubs"]
    assert [(h["value"], h["fanout"]) for h in hubs] == [("PENDING", 40)]
    assert "no duplicate orders" in cli(database_url, tmp_path, "duplicates", "--channel", "unknown").output


@pytest.mark.parametrize(("args", "said"), [
    (("orphans", "--limit", "0"), "error: --limit: 0 is not an integer from 1 to 500"),
    (("duplicates", "--channel", "Bad Channel"), "error: --channel: 'Bad Channel' is not a channel name"),
    (("hubs", "--offset", "-3"), "error: --offset: -3 is not an integer from 0 to 100000"),
])
def test_identity_commands_refuse_bad_options_in_one_line(engine, database_url, tmp_path, args, said):
    out = cli(database_url, tmp_path, *args)
    assert out.exit_code == 1 and said in out.output and len(out.output.strip().splitlines()) == 1, out.output
