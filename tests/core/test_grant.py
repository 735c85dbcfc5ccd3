"""`controltower grant collector|scheduler|dashboard ROLE`: each process's role can do its job and nothing else.

Every test creates a real login role on the test server, grants it through the CLI, connects
as it and runs the process's real operations (the store's ingest, the metrics refresh, alert
evaluation and delivery, retention, the dashboard's acknowledge and silence through
`controltower.alertops`); then it tries what the process must not do and is refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from alerts.evaluate import evaluate
from alerts.notify import deliver_pending
from collectors.store import EventStore
from controltower import alertops, grants, migrate, retention, transactions
from controltower.db import make_engine
from controltower.schema import metadata
from metrics import jobs as metric_jobs
from tests.alerts.test_delivery import ruleset
from wiring.cli import main

REFUSED = "permission denied|must be owner"
PASSWORD_ENV = "CT_TEST_GRANT_PASSWORD"


def ev(cid, milestone, at, *, channel="amazon", n=0, **attributes):
    flow, stage = milestone.split(".")
    return {
        "event_id": f"{cid}:{milestone}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid,
        "order_id": f"SO-{cid}", "channel": channel, "flow": flow, "stage": stage, "status": "ok",
        "system": "middleware", "attributes": attributes,
    }


def scalar(engine, sql, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def refused(engine, sql):
    with pytest.raises(sa.exc.ProgrammingError, match=REFUSED), engine.begin() as conn:
        conn.execute(sa.text(sql))


@pytest.fixture
def login(engine, database_url, monkeypatch):
    """`login(process)` -> an engine connected as a fresh role granted `process` by the CLI."""
    made: list[tuple[str, sa.engine.Engine]] = []
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    monkeypatch.setenv(PASSWORD_ENV, password)

    def make(process: str) -> sa.engine.Engine:
        role = f"ct_{process}_{uuid.uuid4().hex[:8]}"
        main(["grant", process, role, "--password-env", PASSWORD_ENV])  # creates the login role
        url = sa.engine.make_url(database_url).set(username=role, password=password)
        role_engine = make_engine(url.render_as_string(hide_password=False), pool_size=2)
        made.append((role, role_engine))
        return role_engine

    yield make
    for role, role_engine in made:
        role_engine.dispose()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"'))


def firing_alert(engine, now, fingerprint="f00dfeed"):
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO alert_state (fingerprint, rule, labels, severity, state, active_since, firing_since,"
            " last_evaluated_at, summary) VALUES (:f, 'UnpostedOrders', '{\"channel\": \"amazon\"}', 'page',"
            " 'firing', :t, :t, :t, 'amazon: 3 unposted')"
        ), {"f": fingerprint, "t": now})
    return fingerprint


def test_every_table_has_a_line_in_the_policy():
    """A migration adding a table must say who may touch it (else no process can)."""
    tables = {t.name for t in metadata.sorted_tables}
    assert tables <= grants.KNOWN_TABLES, tables - grants.KNOWN_TABLES
    for policy in grants.POLICY.values():
        assert {w.table for w in policy.writes} <= grants.KNOWN_TABLES


def test_collector_ingests_makes_partitions_on_demand_and_acknowledges_but_nothing_else(engine, settings, login, now):
    collector = login("collector")
    assert migrate.upgrade(collector) == []  # `serve` starts with it: heads current, partitions ahead
    old = now - timedelta(days=20)  # partitions are made 1 day back and 7 ahead: none for this day
    partition = f"events_{old.astimezone(now.tzinfo).date():%Y%m%d}"
    with engine.begin() as conn:  # an earlier test of this session may have stored an event that day
        conn.execute(sa.text(f'DROP TABLE IF EXISTS "{partition}"'))
    assert not scalar(engine, "SELECT to_regclass(:p) IS NOT NULL", p=partition)
    records = [
        ev("c1", "order.received", old, external_order_id="112-0000001-0000001"),
        ev("c1", "order.acknowledged", old + timedelta(minutes=1)),
        ev("c2", "order.received", now - timedelta(hours=1)),
    ]
    result = EventStore(collector, settings).ingest(records, source="test", now=now)
    assert (result.accepted, result.duplicates, result.rejected) == (3, 0, [])
    assert scalar(engine, "SELECT to_regclass(:p) IS NOT NULL", p=partition)  # made by the owner's function
    assert scalar(engine, "SELECT count(*) FROM events") == 3
    assert scalar(engine, "SELECT count(*) FROM transactions") == 2
    assert scalar(engine, "SELECT count(*) FROM transaction_milestones") == 3
    assert scalar(engine, "SELECT count(*) FROM transaction_keys WHERE kind = 'external_order_id'") == 1
    again = EventStore(collector, settings).ingest(records[:1], source="test", now=now)
    assert (again.accepted, again.duplicates) == (0, 1)
    with collector.connect() as conn:  # the read API
        assert [h["correlation_id"] for h in transactions.search(conn, "112-0000001-0000001", limit=5)] == ["c1"]
        assert scalar(collector, "SELECT count(*) FROM api_keys") == 0  # it checks keys

    fingerprint = firing_alert(engine, now)  # POST /v1/alerts/{fingerprint}/ack
    acked = alertops.acknowledge(collector, fingerprint, "api-user", now, via="http")
    assert acked["acknowledged_by"] == "api-user"
    assert scalar(engine, "SELECT acknowledged_by FROM alert_state") == "api-user"
    assert scalar(engine, "SELECT count(*) FROM alert_audit WHERE actor = 'api-user'") == 1

    refused(collector, "UPDATE alert_state SET state = 'inactive'")
    refused(collector, "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by) VALUES ('{}', now(), now(), 'x')")
    refused(collector, "DELETE FROM events")
    refused(collector, "DELETE FROM transactions")
    refused(collector, "UPDATE sla_status SET health = 'ok'")
    refused(collector, "INSERT INTO api_keys (name, prefix, key_hash, scopes) VALUES ('x', 'y', 'z', '{}')")
    refused(collector, f'DROP TABLE "{partition}"')
    refused(collector, "CREATE TABLE planted (x int)")
    refused(collector, f"SELECT ct_drop_event_partition('{old.date()}')")
    with pytest.raises(sa.exc.ProgrammingError, match=REFUSED):
        alertops.add_silence(collector, {"channel": "amazon"}, starts_at=now, ends_at=now + timedelta(hours=1),
                             created_by="api-user")


def test_scheduler_refreshes_evaluates_delivers_and_keeps_retention_but_writes_no_events(engine, settings, login, now):
    scheduler = login("scheduler")
    assert migrate.upgrade(scheduler) == []  # `scheduler` starts with it
    store = EventStore(engine, settings)  # the collector's part, as owner
    store.ingest([
        ev("late", "order.received", now - timedelta(hours=2)),  # never posted, target 30m: open breaches
        ev("gone", "order.received", now - timedelta(days=3)),
    ], source="test", now=now)
    defs = metric_jobs.load_definitions(settings)
    from metrics import definitions

    definitions.publish(scheduler, defs)
    metric_jobs.refresh(scheduler, defs, now)
    assert scalar(engine, "SELECT open_breaches FROM sla_status"
                          " WHERE sla = 'erp_posting' AND channel = 'amazon' AND \"window\" = '1h'") == 2

    rules = ruleset("http://127.0.0.1:9")  # UnpostedOrders: erp_posting open_breaches > 0; nothing on port 9
    evaluate(scheduler, rules.rules, now, dashboard_url="http://dash", routes=rules.routes)
    assert scalar(engine, "SELECT state FROM alert_state WHERE rule = 'UnpostedOrders'") == "firing"
    assert scalar(engine, "SELECT count(*) FROM alert_notifications") == 1
    assert deliver_pending(scheduler, rules.receivers, now).retried == 1
    assert scalar(engine, "SELECT attempts FROM alert_notifications") == 1

    expired = (now - timedelta(days=60)).date()
    migrate.ensure_partitions(engine, [expired])
    kept = settings.with_(retention_transactions=86400.0)  # transactions idle for a day go
    done = retention.apply(scheduler, kept, now)
    # (earlier tests of this session may have left other expired partitions: they go too, none it keeps)
    assert f"events_{expired:%Y%m%d}" in done.partitions
    oldest_kept = (now - timedelta(seconds=kept.retention_events)).astimezone(UTC).date()
    assert all(p < f"events_{oldest_kept:%Y%m%d}" for p in done.partitions)
    assert not scalar(engine, "SELECT to_regclass(:p) IS NOT NULL", p=f"events_{expired:%Y%m%d}")
    assert scalar(engine, "SELECT array_agg(correlation_id ORDER BY correlation_id) FROM transactions") == ["late"]

    refused(scheduler, "INSERT INTO events (event_id) VALUES ('x')")
    refused(scheduler, "UPDATE transactions SET status = 'ok'")
    refused(scheduler, "SELECT * FROM api_keys")
    refused(scheduler, "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by) VALUES ('{}', now(), now(), 'x')")
    refused(scheduler, "DROP TABLE events")
    with pytest.raises(sa.exc.DBAPIError, match="refusing to drop"), scheduler.begin() as conn:
        conn.execute(sa.text("SELECT ct_drop_event_partition(current_date)"))  # live ingest's day
    refused(scheduler, "CREATE TABLE planted (x int)")


def test_a_least_privilege_scheduler_leaves_the_ingesting_broker_jobs_to_controltower_tap(
        engine, settings, login, tmp_path):
    from controltower.context import AppContext
    from wiring.scheduler import room_jobs

    taps = tmp_path / "taps.yaml"
    taps.write_text("taps:\n  - {name: erp, broker: rabbitmq, queue: erp.events, dead_letter_queue: erp.dlq}\n")
    with_taps = settings.with_(taps_file=taps)
    owner = {j.name for j in room_jobs(AppContext(with_taps, engine))}
    assert {"collectors.taps", "queues.dead_letters", "replay.run", "queues.probe"} <= owner
    scheduler = {j.name for j in room_jobs(AppContext(with_taps, login("scheduler")))}
    assert "queues.probe" in scheduler and "metrics.refresh" in scheduler  # probes write queue_samples only
    assert not {"collectors.taps", "queues.dead_letters", "replay.run"} & scheduler  # those write events


def test_dashboard_reads_acknowledges_and_silences_and_nothing_else(engine, settings, login, now):
    dashboard = login("dashboard")
    EventStore(engine, settings).ingest([ev("c1", "order.received", now - timedelta(minutes=5))], source="t", now=now)
    fingerprint = firing_alert(engine, now)
    assert scalar(dashboard, "SELECT count(*) FROM transactions") == 1
    assert scalar(dashboard, "SELECT count(*) FROM events") == 1
    assert [a["fingerprint"] for a in alertops.list_alerts(dashboard)] == [fingerprint]

    alertops.acknowledge(dashboard, fingerprint, "erin@example.com", now, via="dashboard")
    silence = alertops.add_silence(dashboard, {"channel": "amazon"}, starts_at=now, ends_at=now + timedelta(hours=2),
                                   created_by="erin@example.com", comment="ERP maintenance", via="dashboard")
    assert silence == 1
    assert scalar(engine, "SELECT acknowledged_by FROM alert_state") == "erin@example.com"
    assert [(a["action"], a["target"]) for a in alertops.list_audit(dashboard)] == [
        ("silence", "silence:1"), ("acknowledge", fingerprint)]
    assert scalar(engine, "SELECT count(*) FROM alert_events WHERE fingerprint = :f", f=fingerprint) == 1

    refused(dashboard, "DELETE FROM events")
    refused(dashboard, "UPDATE alert_state SET state = 'inactive'")
    refused(dashboard, "DELETE FROM alert_silences")
    refused(dashboard, "UPDATE alert_silences SET ends_at = now()")
    refused(dashboard, "INSERT INTO transactions (correlation_id) VALUES ('x')")
    refused(dashboard, "SELECT * FROM api_keys")
    refused(dashboard, "CREATE TABLE planted (x int)")
    refused(dashboard, f"SELECT ct_ensure_event_partition('{(now - timedelta(days=20)).date()}')")


def test_grant_is_exact_repeatable_and_refuses_roles_it_cannot_limit(engine, database_url, login, monkeypatch):
    dashboard = login("dashboard")
    role = dashboard.url.username
    with engine.begin() as conn:  # a privilege from elsewhere, beyond the dashboard's job
        conn.execute(sa.text(f'GRANT DELETE ON events TO "{role}"'))
    main(["grant", "dashboard", role])  # again, without a password: the role exists
    refused(dashboard, "DELETE FROM events")
    main(["grant-readonly", role])  # the older command still works: the dashboard's privileges
    assert scalar(dashboard, "SELECT count(*) FROM transactions") == 0

    for argv in (["grant", "dashboard", "no_such_role_x"], ["grant-readonly", "no_such_role_x"],
                 ["grant", "dashboard", "postgres"], ["grant", "janitor", role],
                 ["grant", "collector", "no_such_role_x", "--password-env", "CT_TEST_UNSET_VARIABLE"],
                 ["grant", "collector", "postgres", "--password-env", PASSWORD_ENV]):  # never alters a superuser
        with pytest.raises(SystemExit) as failed:
            main(argv)
        assert failed.value.code in (1, 2), argv
    assert scalar(engine, "SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'") is True
