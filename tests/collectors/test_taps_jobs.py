"""The taps under the scheduler: a ScheduledJob only when CONTROLTOWER_TAPS_FILE is set, draining each tap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collectors.taps import jobs
from controltower.context import AppContext
from tests.collectors.tapkit import Rabbit, count_events, event


@pytest.fixture
def rabbit():
    r = Rabbit()
    yield r
    r.close()


def test_no_taps_file_no_job(engine, settings):
    assert jobs.jobs(AppContext(settings, engine)) == []


def test_the_job_drains_every_tap_and_the_scheduler_lists_it(rabbit, engine, settings, tmp_path, monkeypatch):
    from wiring.scheduler import room_jobs

    q1, q2 = rabbit.queue(), rabbit.queue()
    for i in range(3):
        rabbit.publish(q1, event(i, "s1"))
    rabbit.publish(q2, event(0, "s2"))
    rabbit.publish(q2, b"[1]")
    path = tmp_path / "taps.yaml"
    path.write_text(f"taps:\n  - {{name: s1, broker: rabbitmq, queue: {q1}}}\n"
                    f"  - {{name: s2, broker: rabbitmq, url_env: CT_TEST_TAP_URL, queue: {q2}}}\n")
    monkeypatch.setenv("CT_TEST_TAP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    context = AppContext(settings.with_(taps_file=path), engine)
    (job,) = jobs.jobs(context)
    assert job.name == "collectors.taps" and job.pipeline is None
    assert "collectors.taps" in [j.name for j in room_jobs(context)]
    results = sorted(job.run(datetime.now(UTC)), key=lambda s: s.tap)  # type: ignore[arg-type]
    assert [(s.tap, s.stored, s.quarantined) for s in results] == [("s1", 3, 0), ("s2", 1, 1)]
    assert (count_events(engine, "tap:s1")[0], count_events(engine, "tap:s2")[0]) == (3, 1)
    assert (rabbit.depth(q1), rabbit.depth(q2), rabbit.depth(q2 + ".quarantine")) == (0, 0, 1)


def test_the_scheduler_runs_replays_and_dead_letter_browsing_only_with_a_taps_file(engine, settings, tmp_path):
    from wiring.scheduler import room_jobs

    names = {j.name for j in room_jobs(AppContext(settings, engine))}
    assert not names & {"replay.run", "queues.dead_letters", "queues.probe", "collectors.taps"}
    path = tmp_path / "taps.yaml"
    path.write_text("taps:\n  - {name: s1, broker: rabbitmq, queue: q, dead_letter_queue: q.dlq}\n")
    names = {j.name: j for j in room_jobs(AppContext(settings.with_(taps_file=path), engine))}
    assert {"replay.run", "queues.dead_letters", "queues.probe", "collectors.taps"} <= set(names)
    assert names["replay.run"].run(datetime.now(UTC)).summary() == "0 sent, 0 failed, 0 refused, 0 deferred"


def test_controltower_tap_also_turns_the_dlq_into_dead_letter_events(rabbit, engine, database_url, tmp_path):
    """With least-privilege roles the scheduler leaves this to `controltower tap` (collector role)."""
    from tests.collectors.tapkit import tap_process

    q, dlq = rabbit.queue(), rabbit.queue()
    rabbit.publish(q, event(0, "ok"))
    rabbit.publish(dlq, event(1, "dead"), message_id="m-dead")
    path = tmp_path / "taps.yaml"
    path.write_text(f"taps:\n  - {{name: d1, broker: rabbitmq, queue: {q}, dead_letter_queue: {dlq}}}\n")
    proc = tap_process(path, database_url, "--once")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert count_events(engine, "tap:d1") == (2, 2)  # the consumed event and the dead letter
    import sqlalchemy as sa

    with engine.connect() as conn:
        dead = conn.execute(sa.text("SELECT status, event_id FROM events WHERE event_id LIKE 'dead-letter:%'")).all()
    assert [tuple(r) for r in dead] == [("dead_letter", "dead-letter:m-dead")]
    assert rabbit.depth(dlq) == 1  # browsed, not consumed: it stays for replay
