"""Running a simulation: backfill fast into the store, then (optionally) live over HTTP.

Timeline of one run (epoch seconds of simulated time, all at or before real now):

    start = now - backfill - lead        now - lead                        real now
      |------- backfill (StoreSink) -------|---- live: catch up at `speed` ----|-- speed 1 -->

The live clock is `min(real now, (now - lead) + wall elapsed × speed)`: it runs `speed` times
faster than the wall until it reaches real time, then follows it. So every `occurred_at` is
at or before real now (never rejected as future), latencies keep their real size (an
acknowledgement taking 40 s is stamped 40 s later, whatever the speed), and with `--duration`
the lead is chosen so the clock reaches real now exactly when the run ends. Backfill and live
share one generator, so orders in flight at the switch complete during the live part.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import Engine
from tqdm import tqdm

from controltower.errors import ConfigError
from controltower.settings import Settings
from simulator.emit import EmitError, FileSink, HttpSink, Sink, StoreSink
from simulator.faults import FaultPlan, FaultSpec, parse_faults
from simulator.identities import IDS_MODES
from simulator.model import Simulation
from simulator.records import SimEvent
from simulator.truth import GroundTruth

# Catch-up span of a live run without --duration: at speed 60 it is caught up in ~6 minutes.
DEFAULT_LEAD_S = 6 * 3600.0
MAX_LEAD_S = 7 * 86400.0
# Headroom under the store's max event age, so the oldest backfilled events are still accepted.
AGE_MARGIN_S = 3600.0
TICK_S = 0.25


def live_lead(speed: float, duration: float | None) -> float:
    """How far behind real now the live clock starts, so it catches up as the run ends."""
    if speed <= 1:
        return 0.0
    if duration is None:
        return DEFAULT_LEAD_S
    return min(MAX_LEAD_S, duration * (speed - 1))


def check_window(backfill: float, lead: float, settings: Settings) -> None:
    """The oldest event must be younger than the store accepts (settings.max_event_age)."""
    oldest = backfill + lead
    if oldest > settings.max_event_age - AGE_MARGIN_S:
        raise ConfigError(
            f"backfill: {oldest / 86400:.1f} days of history (backfill plus live catch-up) is more "
            f"than the store accepts ({settings.max_event_age / 86400:.0f} days, max_event_age, "
            "less an hour); shorten --backfill or --duration, or lower --speed"
        )


class Run:
    """One simulated timeline with its ground truth: `backfill` (store) up to `origin`, then
    `live` (HTTP) from there, sharing one generator so orders in flight at the switch complete.

    `now` is the present (real now, fixed when the run is made); `origin = now - lead` is where
    the live clock starts; faults written `@-START` are placed back from `now`. The demo calls
    the two phases itself, with the collector started in between.
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        faults: Sequence[FaultSpec] = (),
        rate_scale: float = 1.0,
        ids: str = "shared",
        backfill: float = 0.0,
        lead: float = 0.0,
        now: datetime | None = None,
    ) -> None:
        if ids not in IDS_MODES:
            raise ConfigError(f"ids: {ids!r} is not one of {', '.join(IDS_MODES)}")
        self.seed, self.rate_scale, self.ids = seed, rate_scale, ids
        self.present = (now or datetime.now(UTC)).timestamp()
        self.origin = self.present - lead
        self.start = self.origin - backfill
        self.plan = FaultPlan.resolve(faults, self.start, self.present)
        self.sim = Simulation(seed=seed, start=self.start, faults=self.plan, rate_scale=rate_scale, ids=ids)
        self.truth = GroundTruth()
        self.end = self.origin
        self.sinks: dict[str, Sink | FileSink] = {}

    def backfill(self, store: Sink, *, progress: bool = False) -> None:
        """Everything before `origin` straight into `store`."""
        self.sinks["store"] = store
        _backfill(self.sim, self.truth, store, until=self.origin, progress=progress)

    def advance(self, sink: Sink, until: float) -> None:
        """Everything before `until` (simulated epoch seconds) into `sink` at once: where the
        live clock stands once it reaches `until`, without waiting for the wall (tests)."""
        self.sinks.setdefault("http", sink)
        _deliver(self.sim.take_before(until), self.truth, sink, None)
        self.end = max(self.end, until)

    def live(
        self, sink: Sink, files: FileSink | None = None, *, speed: float = 60.0,
        duration: float | None = None, stop: threading.Event | None = None,
    ) -> None:
        """From `origin` on, `speed` times faster than the wall until caught up with real time,
        then at its pace; until `duration` wall seconds passed or `stop` is set."""
        if speed <= 0:
            raise ConfigError(f"speed: {speed} must be more than 0")
        self.sinks["http"] = sink
        if files is not None:
            self.sinks["files"] = files
        self.end = _live(self.sim, self.truth, sink, files, origin=self.origin, speed=speed,
                         duration=duration, stop=stop or threading.Event())

    def result(self, truth_path: Path | None = None) -> dict[str, Any]:
        """The ground truth so far (also written to `truth_path` when given)."""
        result = self.truth.to_json(start=self.start, end=self.end, seed=self.seed,
                                    faults=[w.to_json() for w in self.plan.windows])
        result["rate_scale"] = self.rate_scale
        result["ids"] = self.ids
        result["sinks"] = {name: sink.totals.to_json() for name, sink in self.sinks.items()}
        if truth_path is not None:
            truth_path.parent.mkdir(parents=True, exist_ok=True)
            truth_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        return result


def simulate(
    *,
    seed: int = 7,
    faults: Sequence[FaultSpec] = (),
    rate_scale: float = 1.0,
    ids: str = "shared",
    backfill: float = 0.0,
    store: Sink | None = None,
    live: Sink | None = None,
    files: FileSink | None = None,
    speed: float = 60.0,
    duration: float | None = None,
    stop: threading.Event | None = None,
    truth_path: Path | None = None,
    now: datetime | None = None,
    progress: bool = False,
    lead: float | None = None,
) -> dict[str, Any]:
    """Run backfill (when `backfill` > 0, into `store`) then live (when `live` is given).

    `ids` (simulator.identities.IDS_MODES): `shared`, every hop of an order under one
    correlation id; `real`, each system under its own ids with only the keys it knows.
    `lead`: how far behind real now the live clock starts (default `live_lead`).
    Returns the ground truth (also written to `truth_path` when given). A live run ends after
    `duration` wall seconds or when `stop` is set.
    """
    if speed <= 0:
        raise ConfigError(f"speed: {speed} must be more than 0")
    if backfill > 0 and store is None:
        raise ValueError("backfill needs a store sink")
    if live is None:
        lead = 0.0
    elif lead is None:
        lead = live_lead(speed, duration)
    run = Run(seed=seed, faults=faults, rate_scale=rate_scale, ids=ids, backfill=backfill, lead=lead, now=now)
    if backfill > 0 and store is not None:
        run.backfill(store, progress=progress)
    elif store is not None:
        run.sinks["store"] = store
    if live is not None:
        run.live(live, files, speed=speed, duration=duration, stop=stop)
    elif files is not None:
        run.sinks["files"] = files
    return run.result(truth_path)


def _backfill(sim: Simulation, truth: GroundTruth, store: Sink, *, until: float, progress: bool) -> None:
    hours = math.ceil(until / 3600) - math.floor(sim.start / 3600)
    with tqdm(total=hours, unit="h", desc="backfill (simulated hours)", disable=not progress) as bar:
        for chunk in sim.hours(until):
            _deliver(chunk, truth, store, None)
            bar.update(1)
    store.close()


def _live(
    sim: Simulation,
    truth: GroundTruth,
    sink: Sink,
    files: FileSink | None,
    *,
    origin: float,
    speed: float,
    duration: float | None,
    stop: threading.Event,
) -> float:
    """Emit events as the clock passes them; returns the clock at the end (truth's end)."""
    began = time.monotonic()
    clock = origin
    try:
        while True:
            elapsed = time.monotonic() - began
            finished = stop.is_set() or (duration is not None and elapsed >= duration)
            target = min(time.time(), origin + elapsed * speed)
            try:
                _deliver(sim.take_before(target), truth, sink, files)
            except EmitError:
                if stop.is_set():  # stopped while the collector was unavailable
                    return clock
                raise
            clock = max(clock, target)
            if finished:
                return clock
            stop.wait(TICK_S)
    finally:
        sink.close()
        if files is not None:
            files.close()


def _deliver(events: list[SimEvent], truth: GroundTruth, sink: Sink, files: FileSink | None) -> None:
    """Send one tick's events (3PL shipments by file when a drop folder is set), then count them."""
    by_file = [e for e in events if files is not None and FileSink.wants(e)]
    sink.send([e for e in events if files is None or not FileSink.wants(e)])
    if files is not None:
        files.send(by_file)
    for event in events:
        truth.observe(event)


def run_demo_simulator(
    endpoint: str,
    engine: Engine,
    settings: Settings,
    *,
    speed: float = 60.0,
    seed: int = 7,
    faults: Sequence[str] = (),
    stop: threading.Event,
    truth_path: Path,
    backfill: float = 0.0,
    rate_scale: float = 1.0,
    api_key: str | None = None,
    drop_folder: Path | None = None,
    ids: str = "real",
    lead: float | None = None,
) -> dict[str, Any]:
    """In one call (run it in a thread; `controltower demo` calls `Run`'s phases itself, starting
    the collector between them): optional backfill into the database, then
    live traffic to the collector at `endpoint` until `stop` is set, each system speaking its
    own ids unless `ids="shared"`. Writes and returns the ground truth. Raises ConfigError on
    a bad fault spec or window."""
    specs = parse_faults(faults)
    lead = live_lead(speed, None) if lead is None else lead
    check_window(backfill, lead, settings)
    return simulate(
        seed=seed,
        faults=specs,
        rate_scale=rate_scale,
        ids=ids,
        backfill=backfill,
        store=StoreSink(engine, settings) if backfill > 0 else None,
        live=HttpSink(endpoint, api_key, span_share=0.1, stop=stop),
        files=FileSink(drop_folder) if drop_folder is not None else None,
        speed=speed,
        stop=stop,
        truth_path=truth_path,
        lead=lead,
    )
