"""Where the replay executor runs: `controltower replay run`, `controltower tap` and the scheduler.

One way to build it from the settings and the taps file (its `replay:` section and its taps),
so the three places send alike: raw store key from CONTROLTOWER_RAW_STORE_KEY (HTTP replay only;
a DLQ replay needs none), expired raw payloads purged before each run. The scheduler's
`replay.run` job exists only when CONTROLTOWER_TAPS_FILE is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from collectors.rawstore import RawStore, purge
from collectors.replay import Executor, RunReport
from collectors.taps.config import load_taps
from controltower.context import AppContext
from controltower.jobs import ScheduledJob
from controltower.replayconfig import load_replay

INTERVAL_SECONDS = 10.0  # paced bulk replays are due every few seconds; one cheap query when none is


class ReplayRunner:
    def __init__(self, context: AppContext, path: Path | str, environ: Mapping[str, str] | None = None) -> None:
        from collectors.store import EventStore
        from controltower.masking import Masker, MaskingRules

        settings = context.settings
        self.engine = context.engine
        self.config = load_replay(path)
        taps = {t.name: t for t in load_taps(path).taps}
        raw = RawStore(settings.raw_store_key) if settings.raw_store_key else None
        store = EventStore(context.engine, settings, Masker(MaskingRules.for_settings(settings)))
        self.executor = Executor(context.engine, store, self.config, taps,
                                 environ=os.environ if environ is None else environ, raw=raw)

    def run(self, now: datetime, *, limit: int = 100, clock: Callable[[], datetime] | None = None) -> RunReport:
        """Purge expired originals, then send what is due at `now` (sends stamped by `clock`, the real
        time of each send, so the per-flow rate limit counts what was really sent)."""
        purge(self.engine, now, self.config.raw_store_days)
        return self.executor.run_once(now, limit=limit, clock=clock or (lambda: datetime.now(UTC)))


def jobs(context: AppContext, environ: Mapping[str, str] | None = None) -> list[ScheduledJob]:
    """`replay.run` every few seconds when a taps file is configured (none: no job)."""
    if context.settings.taps_file is None:
        return []
    runner = ReplayRunner(context, context.settings.taps_file, environ)

    def run(now: datetime) -> object:
        return runner.run(now)

    return [ScheduledJob("replay.run", run, INTERVAL_SECONDS)]
