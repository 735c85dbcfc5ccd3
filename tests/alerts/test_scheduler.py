"""The leader-elected scheduler: two processes (threads with their own engines), one leader."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from controltower.context import AppContext
from controltower.db import make_engine
from controltower.jobs import ScheduledJob
from wiring import scheduler


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


class Node:
    """One scheduler 'process': its own engine, jobs, stop event and thread."""

    def __init__(self, name: str, settings, database_url: str, extra_jobs: list[ScheduledJob] | None = None) -> None:
        self.name = name
        self.engine = make_engine(database_url, pool_size=2, application_name=f"test-scheduler-{name}")
        self.ran: list[object] = []
        self.leadership: list[bool] = []
        self.stop = threading.Event()
        jobs = [ScheduledJob("tick", self.ran.append, interval_seconds=0.05), *(extra_jobs or [])]
        self.thread = threading.Thread(
            target=scheduler.run,
            args=(AppContext(settings, self.engine), self.stop),
            kwargs={"jobs": jobs, "retry_seconds": 0.1, "heartbeat_seconds": 0.1,
                    "on_leadership": self.leadership.append},
            daemon=True,
        )

    @property
    def leading(self) -> bool:
        return bool(self.leadership) and self.leadership[-1]

    def start(self) -> Node:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), f"{self.name} did not stop"
        self.engine.dispose()


@pytest.fixture
def nodes(engine, settings, database_url):
    made: list[Node] = []

    def make(name: str, **kw) -> Node:
        node = Node(name, settings, database_url, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        if node.thread.is_alive() or not node.stop.is_set():
            node.close()


def test_exactly_one_leader_and_takeover_on_stop(nodes, caplog):
    failures = []

    def broken(now):
        failures.append(now)
        raise RuntimeError("job bug")

    a = nodes("a", extra_jobs=[ScheduledJob("broken", broken, interval_seconds=0.05)]).start()
    wait_for(lambda: a.leading and len(a.ran) >= 3)
    b = nodes("b").start()
    time.sleep(1.0)
    assert a.leading and not b.leadership
    assert b.ran == []
    assert len(failures) >= 3  # a failing job is logged and keeps being scheduled
    assert len(a.ran) >= 10  # ... and does not stop the others
    assert "job broken failed" in caplog.text

    a.close()
    assert a.leadership == [True, False]
    done_by_a = len(a.ran)
    wait_for(lambda: b.leading and len(b.ran) >= 3)
    time.sleep(0.3)
    assert len(a.ran) == done_by_a  # the stopped leader runs nothing more


def test_standby_takes_over_when_the_leaders_connection_dies(nodes, engine):
    a = nodes("a").start()
    wait_for(lambda: a.leading)
    b = nodes("b").start()
    time.sleep(0.5)
    assert not b.leadership

    with engine.begin() as conn:
        killed = conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND objid::bigint = :k AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"), {"k": scheduler.LEADER_LOCK}).all()
    assert killed == [(True,)]

    # the old leader notices and steps down (it may win the free lock again right after)
    wait_for(lambda: a.leadership[:2] == [True, False])
    wait_for(lambda: b.leading or a.leading)
    time.sleep(0.5)
    leaders = [n for n in (a, b) if n.leading]
    assert len(leaders) == 1
    before = len(leaders[0].ran)
    wait_for(lambda: len(leaders[0].ran) > before + 2)
    follower = b if leaders[0] is a else a
    settled = len(follower.ran)
    time.sleep(0.3)
    assert len(follower.ran) == settled


def test_room_jobs_are_collected(settings, engine):
    jobs = scheduler.room_jobs(AppContext(settings, engine))
    names = {j.name for j in jobs}
    assert {"alerts.evaluate", "alerts.deliver"} <= names
    assert all(j.interval_seconds > 0 for j in jobs)
