"""The taps under the scheduler: one job draining every configured tap for a bounded time per run.

Only when `settings.taps_file` (CONTROLTOWER_TAPS_FILE) is set. Each run drains the taps side by
side, one thread each, until their broker has nothing more or `RUN_SECONDS` pass, so a busy
queue never holds the scheduler; what is left is taken by the next run. A broker or database
outage ends that tap's run with everything unacknowledged still in the broker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime

from collectors.taps.broker import BrokerUnavailable
from collectors.taps.runner import TapRunner, TapStats
from controltower.context import AppContext
from controltower.errors import ConfigError
from controltower.jobs import ScheduledJob

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 15.0
RUN_SECONDS = 10.0  # at most this long per run, so runs never pile up behind each other


def jobs(context: AppContext) -> list[ScheduledJob]:
    if context.settings.taps_file is None:
        return []
    from collectors.rawstore import RawStore
    from collectors.store import EventStore
    from collectors.taps.config import load_taps
    from controltower.masking import Masker, MaskingRules

    config = load_taps(context.settings.taps_file)  # a mistake stops the scheduler with file:line
    masker = Masker(MaskingRules.for_settings(context.settings))
    store = EventStore(context.engine, context.settings, masker)
    # raw_store: true without the key stops the scheduler at start, naming the setting
    raw = RawStore(context.settings.raw_store_key) if any(t.raw_store for t in config.taps) else None

    def drain_all(now: datetime) -> list[TapStats]:
        deadline = time.monotonic() + RUN_SECONDS
        results: list[TapStats] = []

        def one(tap_index: int) -> None:
            runner = TapRunner(config.taps[tap_index], store, context.engine, masker, environ=os.environ, raw=raw)
            try:
                results.append(runner.drain(once=True, deadline=deadline))
            except (BrokerUnavailable, ConfigError) as exc:  # the next run tries again
                log.warning("%s", exc)

        threads = [threading.Thread(target=one, args=(i,), name=f"tap-{t.name}") for i, t in enumerate(config.taps)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    return [ScheduledJob("collectors.taps", drain_all, INTERVAL_SECONDS)]
