"""CLI commands of the collectors room: `import`, `watch`, `tap` and `search`."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from controltower import transactions
from controltower.clitools import console, context_of, fail, line, plain, print_json, print_table
from controltower.errors import ControlTowerError
from controltower.vocab import human_duration


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("watch")(watch_command)
    app.command("tap")(tap_command)
    app.command("search")(search_command)


def _sink(ctx: typer.Context) -> Any:
    from collectors.store import EventStore
    from controltower.masking import Masker, MaskingRules

    context = context_of(ctx)
    store = EventStore(context.engine, context.settings, Masker(MaskingRules.for_settings(context.settings)))

    def sink(records: list[dict[str, Any]], source: str) -> Any:
        return store.ingest(records, source=source, now=datetime.now(UTC))

    return sink


def import_command(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="CSV or JSONL files (optionally .gz) in the canonical shape."),
    batch_size: int = typer.Option(5000, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Import batch feeds; re-importing the same file stores nothing twice."""
    from collectors.files import import_files

    report = import_files(files, _sink(ctx), batch_size=batch_size, progress=not quiet)
    console.print(report.summary(), highlight=False)
    if getattr(report, "errors", None):
        raise typer.Exit(2)


def watch_command(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="Drop folder to watch."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between polls."),
) -> None:
    """Watch a drop folder: import new files, move them to processed/ or quarantine/."""
    from collectors.dropfolder import watch_folder

    if not folder.is_dir():
        fail(f"{folder}: not a folder")
    stop = threading.Event()
    console.print(f"watching {folder} (Ctrl-C to stop)")
    try:
        watch_folder(folder, _sink(ctx), stop=stop, interval=interval, on_report=_print_report)
    except KeyboardInterrupt:
        stop.set()


def _print_report(report: Any) -> None:
    state = "processed" if report.ok else "[red]quarantined[/]"
    name = plain(report.path.name).replace("[", "\\[")  # a file name is sender input: no control characters, no markup
    console.print(f"{name}: {report.accepted} stored, {report.duplicates} already present, {len(report.errors)} rejected → {state}")


PROGRESS_SECONDS = 5.0
REPLAY_SECONDS = 5.0  # how often `tap` sends the replays that came due


def tap_command(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", help="taps.yaml (see collectors/taps.example.yaml)."),
    once: bool = typer.Option(False, "--once", help="Drain what is waiting, then exit (tests, cron)."),
    names: list[str] = typer.Option([], "--tap", help="Run only this tap (repeatable); default: all."),
) -> None:
    """Consume broker queues (RabbitMQ, NATS JetStream) into the store; acknowledged only once committed.
    Also sends the approved replays that come due (the taps file's replay: section) and, every
    probe_interval, turns the messages in the taps' dead-letter queues into dead_letter events."""
    import os
    import signal
    import time

    from collectors import deadletters
    from collectors.rawstore import RawStore
    from collectors.replayjobs import ReplayRunner
    from collectors.store import EventStore
    from collectors.taps.config import load_taps
    from collectors.taps.runner import TapRunner, TapStats
    from controltower.masking import Masker, MaskingRules

    taps_config = load_taps(config)
    chosen = [taps_config.tap(n) for n in names] if names else list(taps_config.taps)
    context = context_of(ctx, application_name="controltower-tap")
    masker = Masker(MaskingRules.for_settings(context.settings))
    store = EventStore(context.engine, context.settings, masker)
    raw = RawStore(context.settings.raw_store_key) if any(t.raw_store for t in chosen) else None
    replays = ReplayRunner(context, config)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

    shown: dict[str, float] = {}

    def progress(stats: TapStats) -> None:  # one line per tap every few seconds, not one per batch
        if not once and time.monotonic() - shown.get(stats.tap, 0.0) >= PROGRESS_SECONDS:
            shown[stats.tap] = time.monotonic()
            line(stats.summary())

    runners = [TapRunner(t, store, context.engine, masker, environ=os.environ, on_batch=progress, raw=raw)
               for t in chosen]
    failures: list[str] = []

    def run(runner: TapRunner) -> None:
        try:
            runner.drain(stop=stop, once=once)
        except Exception as exc:  # a thread boundary: one line, the other taps go on
            failures.append(str(exc) or type(exc).__name__)
            if not once:
                stop.set()

    if not once:
        console.print(f"tapping {', '.join(f'{t.name} ({t.broker} {t.consumed})' for t in chosen)} (Ctrl-C to stop)",
                      highlight=False)
    threads = [threading.Thread(target=run, args=(r,), name=f"tap-{r.tap.name}", daemon=True) for r in runners]
    for t in threads:
        t.start()
    def send_replays() -> None:  # between batches, in this thread: the taps' threads go on meanwhile
        if not replays.config.flows:
            return
        try:
            report = replays.run(datetime.now(UTC))
        except ControlTowerError as exc:  # the next round tries again
            line(f"replay: {exc}")
            return
        if report.sent or report.failed or report.refused:
            line(f"replay: {report.summary()}")

    def browse_dead_letters() -> None:  # dead letters nobody reports: seen in the DLQs themselves
        try:
            results = deadletters.browse(store, taps_config, now=datetime.now(UTC), environ=os.environ)
        except ControlTowerError as exc:  # the database is away: the next round tries again
            line(f"dead letters: {exc}")
            return
        for result in results:
            for error in result.errors:
                line(f"dead letters: {error}")

    last_replay = last_browse = 0.0
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
            if not once and time.monotonic() - last_replay >= REPLAY_SECONDS:
                last_replay = time.monotonic()
                send_replays()
            if not once and time.monotonic() - last_browse >= taps_config.probe_interval_seconds:
                last_browse = time.monotonic()
                browse_dead_letters()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(10)
    if once:
        browse_dead_letters()
        send_replays()
    for r in runners:
        line(r.stats.summary())
    if failures:
        fail("; ".join(failures))


SEARCH_SHOWN = 20  # search hits the command lists


def search_command(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Order id, correlation id, marketplace order number, SKU or tracking number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Find a transaction by any of its keys and print its timeline."""
    from controltower.masking import Masker, MaskingRules

    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:  # argv bytes that are not UTF-8 arrive as surrogates
            fail(f"{plain(key.encode('utf-8', 'surrogateescape'))[:80]}: not valid UTF-8, so nothing stored can match it")
    context = context_of(ctx)
    # identifiers carrying personal data are stored as tokens: look up what was stored
    stored_key = Masker(MaskingRules.for_settings(context.settings)).mask_identifier(key)
    with context.engine.connect() as conn:
        hits = transactions.search(conn, stored_key, limit=SEARCH_SHOWN + 1)  # one more: do more match?
        more, hits = len(hits) > SEARCH_SHOWN, hits[:SEARCH_SHOWN]
        found = [transactions.get(conn, h["correlation_id"], now=datetime.now(UTC)) for h in hits[:1]]
    if as_json:
        print_json({"results": hits, "transaction": found[0] if found else None})
        if not hits:
            raise typer.Exit(1)
        return
    if not hits:
        fail(f"nothing found for {key!r} (searched order ids, correlation ids and business keys)")
    if len(hits) > 1:
        line(f"more than {SEARCH_SHOWN} transactions match {key!r}; the newest {SEARCH_SHOWN}:" if more
             else f"{len(hits)} transactions match {key!r}; newest first:")
        print_table(
            ("correlation_id", "channel", "order_id", "status", "last_event_at", "members"),
            [(h.get("correlation_id"), h.get("channel") or "-", h.get("order_id") or "-", h.get("status"),
              h.get("last_event_at"), len(h.get("correlation_ids") or []) or 1) for h in hits],
        )
    tx = found[0]
    if tx is None:
        fail(f"{hits[0]['correlation_id']!r} disappeared while reading it (retention?); search again")
    line(f"{plain(tx.get('correlation_id'))}  channel {plain(tx.get('channel') or '-')}  "
         f"order {plain(tx.get('order_id') or '-')}  status {plain(tx.get('status'))}", style="bold")
    members = tx.get("members") or []
    if len(members) > 1:  # a business transaction: say which system traced it under which id
        line(f"  {len(tx.get('correlation_ids') or members)} correlation ids, one business transaction:")
        for m in members:
            line(f"  member {_member(m)}")
        if len(members) < len(tx.get("correlation_ids") or members):  # the core describes MAX_MEMBERS one by one
            line(f"  (the first {len(members):,} of {len(tx['correlation_ids']):,} listed; --json has every id)")
    for kind, values in (tx.get("keys") or {}).items():
        line(f"  {plain(kind)}: {', '.join(plain(v) for v in values)}")
    for verdict in tx.get("sla") or []:
        line(f"  SLA {plain(verdict.get('sla'))}: {plain(verdict.get('state'))}{_measure(verdict)}")
    for e in tx.get("events") or []:
        failed = e.get("status") != "ok"
        err = f"  {plain(e.get('error_code'))} {plain(e.get('error_message'))}".rstrip() if failed else ""
        member = f"{plain(e.get('correlation_id'))}  " if len(members) > 1 else ""
        line(f"  {plain(e.get('occurred_at'))}  {member}{plain(e.get('system') or '-'):<12} "
             f"{plain(e.get('flow'))}.{plain(e.get('stage')):<22} {plain(e.get('status'))}{err}",
             style="red" if failed else None)
    loaded = len(tx.get("events") or [])
    if loaded < (tx.get("event_count") or 0):  # the core loads a bounded number, earliest first
        line(f"  (the earliest {loaded:,} of the {tx['event_count']:,} events this transaction counted)")


def _member(member: dict[str, Any]) -> str:
    """`erp-42  erp  2026-…Z → 2026-…Z  3 events  erp_document=4500001, order_id=SO-1001`: one
    member of a business transaction, its systems, time span and keys; any field may be missing."""
    keys = ", ".join(f"{plain(kind)}={plain(v)}" for kind, values in (member.get("keys") or {}).items() for v in values)
    systems = ",".join(plain(s) for s in member.get("systems") or []) or "-"
    return (f"{plain(member.get('correlation_id'))}  {systems}  {plain(member.get('first_event_at'))} → "
            f"{plain(member.get('last_event_at'))}  {plain(member.get('event_count'))} events"
            + (f"  {keys}" if keys else ""))


def _measure(verdict: dict[str, Any]) -> str:
    """` (4 min of 15 min)`, ` (4 min, due 2026-…)` for a deadline SLA, or nothing: any field may be missing."""
    elapsed, target, due = verdict.get("elapsed_ms"), verdict.get("target_ms"), verdict.get("due_at")
    if not isinstance(elapsed, int | float):
        return f" (due {plain(due)})" if due else ""
    if isinstance(target, int | float):
        return f" ({human_duration(elapsed)} of {human_duration(target)})"
    return f" ({human_duration(elapsed)}, due {plain(due)})" if due else f" ({human_duration(elapsed)})"
