"""`controltower migrate --distributed`: refused in one line without Citus, a no-op when re-run on a cluster.

The refusal runs the real command in a subprocess on plain PostgreSQL; the cluster tests run in
the Citus mode (CONTROLTOWER_TEST_CITUS_URL), whose session database the fixtures distributed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from controltower import distribute
from controltower.schema import metadata
from tests.conftest import CITUS_SHARDS, CITUS_URL

cluster = pytest.mark.skipif(not CITUS_URL, reason="needs a Citus coordinator (CONTROLTOWER_TEST_CITUS_URL)")


def controltower(database_url: str, tmp_path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLTOWER_")}
    return subprocess.run(
        [sys.executable, "-m", "wiring", "--database-url", database_url, "--data-dir", str(tmp_path), *argv],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def layout_on_cluster(engine) -> dict[str, tuple[str, str | None, int]]:
    """table -> (partition method, distribution column, co-location group) as Citus records it."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT logicalrelid::regclass::text AS tbl, partmethod, colocationid,"
            " CASE WHEN partmethod = 'h' THEN column_to_column_name(logicalrelid, partkey) END AS col"
            " FROM pg_dist_partition"))
        return {r.tbl: (r.partmethod, r.col, r.colocationid) for r in rows}


def test_every_table_of_the_schema_has_a_place_on_a_cluster(engine):
    with engine.connect() as conn:
        tables = set(conn.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " AND c.relname NOT LIKE 'pg_%'")).scalars())
    # (ingest's staging tables and the member lists exist only on a cluster, made by distribute itself)
    only_on_a_cluster = {*distribute.STAGING, distribute.MEMBERS}
    assert tables - set(distribute.LAYOUT) - only_on_a_cluster == set(), "decide distributed, reference or local for these tables"
    assert {t.name for t in metadata.sorted_tables} <= set(distribute.LAYOUT)
    # each table once
    assert len(distribute.LAYOUT) == len(distribute.DISTRIBUTED) + len(distribute.REFERENCE) + len(distribute.LOCAL)


@pytest.mark.single_node(reason="the refusal needs a database without the citus extension")
def test_without_citus_the_command_fails_in_one_line(migrated_engine, database_url, tmp_path):
    done = controltower(database_url, tmp_path, "migrate", "--distributed")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: migrate --distributed: the citus extension is not installed in this database")
    # the migrations themselves were applied (and stay applied): only the distribution was refused
    assert "already current" in done.stdout
    with migrated_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'citus'")).scalar() == 0


@cluster
def test_on_a_cluster_the_schema_is_laid_out_as_decided(migrated_engine):
    on_cluster = layout_on_cluster(migrated_engine)
    anchor = on_cluster["transactions"][2]
    for table, column in distribute.DISTRIBUTED.items():
        assert on_cluster[table] == ("h", column, anchor), table  # hashed, by that column, co-located
    for table in distribute.REFERENCE:
        assert on_cluster[table][0] == "n", table
    # the member lists: by business id, in the same group (a business's row in `transactions` is
    # on the shard of its member list)
    assert on_cluster[distribute.MEMBERS] == ("h", "business_id", anchor)
    for table in distribute.LOCAL:
        assert table not in on_cluster, table
    with migrated_engine.connect() as conn:
        shards = conn.execute(sa.text(
            "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass")).scalar()
    assert shards == CITUS_SHARDS


@cluster
def test_on_a_cluster_running_it_again_changes_nothing(migrated_engine, database_url, tmp_path):
    def snapshot() -> tuple[dict, list]:
        with migrated_engine.connect() as conn:
            shards = conn.execute(sa.text(
                "SELECT logicalrelid::regclass::text, shardid, shardminvalue, shardmaxvalue FROM pg_dist_shard"
                " ORDER BY shardid")).all()
        return layout_on_cluster(migrated_engine), [tuple(r) for r in shards]

    before = snapshot()
    done = controltower(database_url, tmp_path, "migrate", "--distributed")
    assert done.returncode == 0, done
    assert "already distributed" in done.stdout
    placed = len(distribute.DISTRIBUTED) + len(distribute.REFERENCE) + len(distribute.STAGING) + 1  # + MEMBERS
    assert f"{placed} tables already in place" in done.stdout
    assert snapshot() == before
    # and the function itself says so
    result = distribute.distribute(migrated_engine)
    assert result.distributed == [] and result.reference == []
    assert sorted(result.already) == sorted(
        [*distribute.DISTRIBUTED, *distribute.REFERENCE, *distribute.STAGING, distribute.MEMBERS])


@cluster
def test_on_a_cluster_distribute_fills_the_member_lists_of_what_is_stored(engine, settings, tmp_path, database_url):
    """A cluster distributed before business_members existed gets them on the next run, filled
    from `transactions`; search and the view then read them."""
    from datetime import UTC, datetime

    from collectors.store import EventStore
    from tests.conftest import members_disagree

    at = datetime.now(UTC).replace(microsecond=0)

    def event(cid: str, eid: str, order_id: str) -> dict:
        return {"event_id": eid, "occurred_at": at.isoformat(), "correlation_id": cid, "order_id": order_id,
                "channel": "amazon", "flow": "order", "stage": "received", "status": "ok", "attributes": {}}

    # two members linked by their order id, and one on its own
    EventStore(engine, settings).ingest(
        [event("M-A", "a1", "ORD-1"), event("M-B", "b1", "ORD-1"), event("M-C", "c1", "ORD-2")], source="test", now=at)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {distribute.MEMBERS}"))  # noqa: S608 (a module constant)
    done = controltower(database_url, tmp_path, "migrate", "--distributed")
    assert done.returncode == 0, done
    assert members_disagree(engine) == []
    with engine.connect() as conn:
        kept = conn.execute(sa.text(f"SELECT business_id, correlation_id FROM {distribute.MEMBERS}")).all()  # noqa: S608
        assert len(kept) == 3 and len({b for b, _ in kept}) == 2
        from controltower import transactions

        [found] = transactions.search(conn, "ORD-1")
        assert found["correlation_ids"] == ["M-A", "M-B"]
        assert transactions.get(conn, "M-B", now=at)["correlation_ids"] == ["M-A", "M-B"]
        assert [r["correlation_ids"] for r in transactions.search(conn, "M-C")] == [["M-C"]]
