"""The scheduler process: runs the rooms' jobs in exactly one leader process.

Composition root (may import rooms). Every scheduler process holds a dedicated database
connection and tries a session-level `pg_try_advisory_lock(LEADER_LOCK)`. Only while it holds
the lock does it run an APScheduler `BackgroundScheduler` with every room's jobs; standbys
retry every `retry_seconds` (1 s: one cheap lock attempt, so a killed leader costs about a
second plus the time PostgreSQL takes to notice its connection is gone). The lock dies with the
leader's connection (process killed, network gone); the leader checks its connection every
`heartbeat_seconds` and stops its jobs as soon as that connection is lost, before anyone else
can become leader for long.

Jobs with a `pipeline` position run as one APScheduler job per tick, in order
(`wiring.pipeline`: metrics.refresh -> alerts.evaluate -> alerts.deliver), and a stage's `wake`
adds a one-shot extra run of that chain at the moment it names (a pending alert reaching its
`for`) when that comes before the next tick. The other jobs (retention, delivery retries) run
on intervals of their own.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import typer
from sqlalchemy.engine import Connection

from controltower.context import AppContext
from controltower.jobs import ScheduledJob
from wiring.pipeline import Pipeline

log = logging.getLogger(__name__)

LEADER_LOCK = 0x43540002  # advisory lock id of the scheduler leader (0x4354 = "CT")
WAKE_JOB = "pipeline.wake"  # the one-shot extra run of the pipeline a stage's `wake` asked for
WAKE_MIN_GAP = timedelta(seconds=1)  # between an extra run and the next extra run it asks for


def room_jobs(context: AppContext) -> list[ScheduledJob]:
    from alerts import jobs as alert_jobs
    from collectors import deadletters, queueprobe, rawstore, replayjobs
    from collectors.taps import jobs as tap_jobs
    from controltower import retention
    from metrics import jobs as metric_jobs

    def keep_bounded(now: object) -> object:
        return retention.apply(context.engine, context.settings)

    jobs = [
        *metric_jobs.jobs(context), *alert_jobs.jobs(context), ScheduledJob("retention", keep_bounded, 3600.0),
        *queueprobe.jobs(context),  # queue depth and age for the queue SLAs (only with a taps file)
        *rawstore.jobs(context),  # the raw store's retention (replay.raw_store_days)
    ]
    # The broker jobs that store events (taps, dead letters, replay lineage) run here only where the
    # scheduler's database role may write events: with least-privilege roles (`controltower grant
    # scheduler`) it may not, and `controltower tap` runs them with the collector's role instead.
    ingesting = [
        *tap_jobs.jobs(context),  # drain the broker taps (only with a taps file)
        *deadletters.jobs(context),  # dead letters sitting in the taps' DLQs become dead_letter events
        *replayjobs.jobs(context),  # send the approved, due replays (only with a taps file)
    ]
    if ingesting and not _may_write_events(context.engine):
        log.warning("scheduler: this database role cannot write events, so the broker taps, dead-letter browsing "
                    "and replays are left to `controltower tap` (run it with the collector's role)")
        ingesting = []
    return jobs + ingesting


def _may_write_events(engine: Any) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text("SELECT has_table_privilege(current_user, 'events', 'INSERT')")).scalar())


def _guarded(job: ScheduledJob, leading: threading.Event) -> Callable[[], None]:
    def fire() -> None:
        if not leading.is_set():
            return  # leadership lost between scheduling and running: do nothing
        started = time.monotonic()
        try:
            job.run(datetime.now(UTC))
        except Exception:  # one failing job must not stop the others or the scheduler
            log.exception("job %s failed", job.name)
        else:
            log.debug("job %s done in %.3fs", job.name, time.monotonic() - started)

    return fire


def _add_interval_job(scheduler: Any, fire: Callable[[], None], name: str, interval: float, now: datetime) -> None:
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler.add_job(
        fire,
        IntervalTrigger(seconds=max(0.05, interval), timezone=UTC),
        id=name,
        name=name,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(interval)),
        next_run_time=now,
        replace_existing=True,
    )


def _pipelined(pipeline: Pipeline, scheduler: Any, leading: threading.Event) -> Callable[[], None]:
    """The pipeline as an APScheduler job: after a run, an extra run at the earliest wake-up a
    stage asked for, when that comes before the next regular tick. A wake-up asked by an extra
    run itself comes at least `WAKE_MIN_GAP` after that run started: pending series with many
    different `for` (or a stage always asking for "soon") cost at most one extra run per second,
    not a pipeline (a full metrics refresh) back to back."""
    from apscheduler.triggers.date import DateTrigger

    def fire(extra: bool = False) -> None:
        if not leading.is_set():
            return
        began = datetime.now(UTC)
        wake = pipeline.run(leading)
        if wake is None or not leading.is_set():
            return
        if extra:
            wake = max(wake, began + WAKE_MIN_GAP)
        tick = scheduler.get_job(pipeline.name)
        if tick is not None and tick.next_run_time is not None and wake >= tick.next_run_time:
            return  # the regular tick comes first and evaluates after that moment anyway
        log.debug("pipeline: extra run at %s", wake.isoformat())
        scheduler.add_job(fire, DateTrigger(run_date=wake, timezone=UTC), args=(True,), id=WAKE_JOB, name=WAKE_JOB,
                          misfire_grace_time=None, replace_existing=True)

    return fire


def _start_scheduler(jobs: Sequence[ScheduledJob], leading: threading.Event) -> Any:
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone=UTC)
    now = datetime.now(UTC)
    pipeline, others = Pipeline.split(jobs)
    if pipeline is not None:
        _add_interval_job(scheduler, _pipelined(pipeline, scheduler, leading), pipeline.name,
                          pipeline.interval_seconds, now)
    for job in others:
        _add_interval_job(scheduler, _guarded(job, leading), job.name, job.interval_seconds, now)
    scheduler.start()
    return scheduler


def _try_lock(conn: Connection) -> bool:
    got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}).scalar())
    conn.commit()
    return got


def _alive(conn: Connection) -> bool:
    try:
        conn.execute(sa.text("SELECT 1"))
        conn.commit()
        return True
    except Exception as exc:  # any error on the lock connection means the lock may be gone
        log.warning("scheduler lost its leader connection: %s", exc)
        return False


def run(
    context: AppContext,
    stop: threading.Event | None = None,
    *,
    jobs: Sequence[ScheduledJob] | None = None,
    retry_seconds: float = 1.0,
    heartbeat_seconds: float = 2.0,
    on_leadership: Callable[[bool], None] | None = None,
) -> None:
    """Run as leader or standby until `stop` is set (or SIGTERM/SIGINT in the main thread).

    `jobs` defaults to every room's jobs (`metrics.jobs` + `alerts.jobs`); `on_leadership` is
    told True when this process becomes leader and False when it steps down.
    """
    stop = stop or threading.Event()
    job_list = list(room_jobs(context) if jobs is None else jobs)
    restore = _install_signals(stop)
    leading = threading.Event()
    try:
        log.info("scheduler started with %d jobs: %s", len(job_list), ", ".join(j.name for j in job_list))
        while not stop.is_set():
            conn: Connection | None = None
            try:
                conn = context.engine.connect()
                if not _try_lock(conn):
                    conn.close()
                    conn = None
                    stop.wait(retry_seconds)
                    continue
                _lead(conn, job_list, stop, leading, heartbeat_seconds, on_leadership)
            except Exception as exc:  # database down: stay standby and retry
                log.warning("scheduler: database unavailable (%s); retrying in %.0fs", type(exc).__name__, retry_seconds)
                stop.wait(retry_seconds)
            finally:
                if conn is not None:
                    # Closing the physical connection releases the session lock for sure
                    # (returning it to the pool would keep the lock alive on an idle connection).
                    try:
                        conn.invalidate()
                        conn.close()
                    except Exception:  # already broken: nothing to release
                        log.debug("lock connection already closed", exc_info=True)
    finally:
        restore()
    log.info("scheduler stopped")


def _lead(
    conn: Connection,
    jobs: Sequence[ScheduledJob],
    stop: threading.Event,
    leading: threading.Event,
    heartbeat_seconds: float,
    on_leadership: Callable[[bool], None] | None,
) -> None:
    log.info("scheduler is the leader: running %d jobs", len(jobs))
    leading.set()
    if on_leadership:
        on_leadership(True)
    scheduler = _start_scheduler(jobs, leading)
    try:
        while not stop.wait(heartbeat_seconds):
            if not _alive(conn):
                break
    finally:
        leading.clear()
        scheduler.shutdown(wait=True)
        if on_leadership:
            on_leadership(False)
        log.info("scheduler stepped down")


def _install_signals(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: object) -> None:
        log.info("scheduler: %s received, shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def scheduler_command(ctx: typer.Context) -> None:
    """Run the scheduler (rollups, SLA table, alert evaluation and delivery) as leader or hot standby."""
    from controltower import migrate
    from controltower.clitools import settings_of

    # Its own pool: the leader's lock connection plus every job that may run at once.
    context = AppContext.open(settings_of(ctx), pool_size=6, application_name="controltower-scheduler")
    migrate.upgrade(context.engine)
    try:
        run(context)
    finally:
        context.engine.dispose()


def register(app: typer.Typer) -> None:
    """Add the `scheduler` command to the composition root's app."""
    app.command("scheduler")(scheduler_command)
