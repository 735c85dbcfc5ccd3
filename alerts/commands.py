"""CLI commands of the `alerts` room, registered by the composition root.

    controltower alerts check FILE        (also: controltower rules check FILE)
    controltower rules list [FILE] [--json]
    controltower alerts list [--all] [--json]
    controltower alerts silence --matcher channel=amazon --for 2h --comment "ERP maintenance"
    controltower alerts silences [--json]
    controltower alerts ack FINGERPRINT --by NAME
    controltower alerts deliveries [--status failed] [--limit 50] [--json]
    controltower alerts audit [--limit 100] [--json]
    controltower alerts test RECEIVER [--label k=v ...] [--resolve] [--file FILE]
    controltower alerts incidents [--all] [--json]   (alerts.incidents_commands)
    controltower alerts incident-ack ID --by NAME
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from controltower.clitools import (
    console,
    context_of,
    fail,
    line,
    plain,
    print_json,
    print_table,
    settings_of,
)
from controltower.errors import ConfigError, ControlTowerError
from controltower.settings import parse_duration

alerts_app = typer.Typer(name="alerts", help="Alert rules, active alerts, silences and acknowledgements.", no_args_is_help=True)
rules_app = typer.Typer(name="rules", help="Alert rules files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this room's commands to `app`."""
    from alerts import incidents_commands  # noqa: F401  (adds the incident commands to alerts_app)

    app.add_typer(alerts_app, name="alerts")
    app.add_typer(rules_app, name="rules")


@rules_app.command("check")
@alerts_app.command("check")
def check_command(file: Path = typer.Argument(..., help="Alert rules YAML to validate.")) -> None:
    """Validate an alert rules file; print the rule and receiver count."""
    from alerts.rules import load_rules

    ruleset = load_rules(file)  # a ConfigError is printed as one `file:line: ...` line, exit 1
    line(f"{file}: ok, {len(ruleset.rules)} rules, {len(ruleset.receivers)} receivers")


@rules_app.command("list")
def rules_list_command(
    ctx: typer.Context,
    file: Path = typer.Argument(None, help="Alert rules YAML (default: the configured or shipped file)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """The rules in effect: condition, wait, severity and receivers."""
    from alerts.rules import load_rules

    ruleset = load_rules(file or settings_of(ctx).alerts_file)
    rows = [
        {
            "name": r.name, "sla": r.sla, "channel": getattr(r, "channel", None),
            "condition": f"{r.field} {r.op} {r.value:g}" if isinstance(r.value, float) else f"{r.field} {r.op} {r.value}",
            "for_seconds": getattr(r, "for_seconds", None), "severity": getattr(r, "severity", None),
            "receivers": list(getattr(r, "receivers", ()) or ()),  # empty: the routes and defaults decide
        }
        for r in ruleset.rules
    ]
    if as_json:
        print_json({"rules": rows})
        return
    print_table(
        ("rule", "sla", "channel", "condition", "for", "severity", "receivers"),
        [(r["name"], r["sla"], r["channel"] or "*", r["condition"], f"{r['for_seconds'] or 0:g}s", r["severity"],
          ", ".join(r["receivers"])) for r in rows],
    )


@alerts_app.command("list")
def list_command(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Also show resolved and inactive series."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Pending and firing alerts, most severe first."""
    from alerts.evaluate import list_alerts
    from alerts.http import alert_json

    context = context_of(ctx)
    states = ("pending", "firing", "resolved", "inactive") if show_all else ("pending", "firing")
    rows = [alert_json(r) for r in list_alerts(context.engine, states)]
    if as_json:
        print_json({"alerts": rows})
        return
    if not rows:
        console.print("no pending or firing alerts")
        return
    print_table(
        ("fingerprint", "state", "severity", "rule", "summary", "since", "ack"),
        [(a.get("fingerprint"), a.get("state"), a.get("severity"), a.get("rule"), a.get("summary"),
          a.get("firing_since") or a.get("active_since"), a.get("acknowledged_by")) for a in rows],
    )


@alerts_app.command("silence")
def silence_command(
    ctx: typer.Context,
    matcher: list[str] = typer.Option(..., "--matcher", "-m", help="label=value (repeatable; all must match)."),
    duration: str = typer.Option("2h", "--for", help="How long, e.g. 30m, 2h, 1d."),
    comment: str = typer.Option("", "--comment", help="Why (shown with the silence)."),
    by: str = typer.Option(None, "--by", help="Who (default: the current user).", show_default=False),
) -> None:
    """Silence alerts whose labels match: they still change state but send nothing."""
    from alerts.evaluate import add_silence

    matchers: dict[str, str] = {}
    for item in matcher:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"--matcher {item!r}: expected label=value, e.g. channel=amazon")
        matchers[name.strip()] = value.strip()
    try:
        seconds = parse_duration(duration, where="--for")
    except ConfigError as exc:
        fail(str(exc))
    if seconds <= 0:
        fail("--for must be longer than 0")
    context = context_of(ctx)
    now = datetime.now(UTC)
    try:
        silence_id = add_silence(
            context.engine, matchers, starts_at=now, ends_at=now + timedelta(seconds=seconds),
            created_by=by or getpass.getuser(), comment=comment,
        )
    except ControlTowerError as exc:
        fail(str(exc))
    ends = (now + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    line(f"silence {silence_id} until {ends}: " + ", ".join(f"{k}={v}" for k, v in matchers.items()))


@alerts_app.command("silences")
def silences_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Active and upcoming silences."""
    from alerts.evaluate import list_silences

    rows = list_silences(context_of(ctx).engine, datetime.now(UTC))
    if as_json:
        times = ("starts_at", "ends_at", "created_at")
        print_json({"silences": [{str(k): (_when(v) or None) if k in times else v for k, v in r.items()} for r in rows]})
        return
    if not rows:
        console.print("no silences")
    for s in rows:
        matchers = ", ".join(f"{k}={v}" for k, v in (s.get("matchers") or {}).items())
        line(
            f"{s['id']}: {matchers} until {_when(s.get('ends_at'))} by {plain(s.get('created_by'))}"
            + (f" — {plain(s['comment'])}" if s.get("comment") else "")
        )


@alerts_app.command("ack")
def ack_command(
    ctx: typer.Context,
    fingerprint: str = typer.Argument(..., help="Alert fingerprint (or an unambiguous prefix)."),
    by: str = typer.Option(None, "--by", help="Who acknowledges (default: the current user).", show_default=False),
) -> None:
    """Acknowledge an alert: no repeat notifications until it resolves."""
    from alerts.evaluate import acknowledge

    context = context_of(ctx)
    try:
        row = acknowledge(context.engine, fingerprint, by or getpass.getuser(), datetime.now(UTC))
    except ControlTowerError as exc:
        fail(str(exc))
    line(f"acknowledged {row['fingerprint']} ({row['rule']}): {plain(row.get('summary'))}")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


@alerts_app.command("deliveries")
def deliveries_command(
    ctx: typer.Context,
    status: str = typer.Option(None, "--status", help="Only pending, sent or failed.", show_default=False),
    limit: int = typer.Option(50, "--limit", help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """The delivery log: every notification, its receiver, status, attempts and last error."""
    from controltower.alertops import list_deliveries

    if status is not None and status not in ("pending", "sent", "failed"):
        fail(f"--status {status!r}: expected pending, sent or failed")
    rows = list_deliveries(context_of(ctx).engine, status=status, limit=limit)
    if as_json:
        times = ("created_at", "sent_at", "next_attempt_at")
        out = [{str(k): (_when(v) or None) if k in times else v for k, v in r.items()} for r in rows]
        print_json({"deliveries": out})
        return
    if not rows:
        console.print("no notifications")
        return
    # on a narrow terminal a cell folds, never hides, an error; piped, each row is one line
    print_table(
        ("id", "created", "rule", "kind", "alerts", "receiver", "status", "attempts", "last_error"),
        [(r["id"], _when(r["created_at"]), r["rule"], r["kind"], r["alert_count"], r["receiver"],
          r["status"], r["attempts"], r["last_error"]) for r in rows],
    )


@alerts_app.command("audit")
def audit_command(
    ctx: typer.Context,
    limit: int = typer.Option(100, "--limit", help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Who silenced or acknowledged what, and when."""
    from controltower.alertops import list_audit

    rows = list_audit(context_of(ctx).engine, limit=limit)
    if as_json:
        out = [{str(k): _when(v) if k == "at" else v for k, v in r.items()} for r in rows]
        print_json({"audit": out})
        return
    if not rows:
        console.print("no audit entries")
    for r in rows:
        detail = r["detail"] if isinstance(r.get("detail"), dict) else {}
        extra = detail.get("summary") or ", ".join(f"{k}={v}" for k, v in (detail.get("matchers") or {}).items())
        via = f" via {detail['via']}" if detail.get("via") else ""
        line(f"{_when(r['at'])} {plain(r['actor'])} {r['action']} {plain(r['target'])}{via}: {plain(extra)}")


@alerts_app.command("test")
def test_command(
    ctx: typer.Context,
    receiver: str = typer.Argument(..., help="Receiver name from the rules file."),
    label: list[str] = typer.Option(None, "--label", "-l", help="label=value of the sample alert (repeatable)."),
    resolve: bool = typer.Option(False, "--resolve", help="Also send the resolved notice."),
    file: Path = typer.Option(None, "--file", help="Alert rules YAML (default: the configured or shipped file)."),
) -> None:
    """Send a sample alert straight through RECEIVER; print its route and the result."""
    import os

    import httpx

    from alerts import probe
    from alerts.notify import DeliveryError, TicketStore, send
    from alerts.rules import load_rules

    settings = settings_of(ctx)
    ruleset = load_rules(file or settings.alerts_file)
    target = ruleset.receivers.get(receiver)
    if target is None:
        fail(f"unknown receiver {receiver!r} (defined: {', '.join(sorted(ruleset.receivers)) or 'none'})")
    labels: dict[str, str] = {}
    for item in label or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"--label {item!r}: expected label=value, e.g. channel=amazon")
        labels[name.strip()] = value.strip()
    now = datetime.now(UTC)
    labels = {**probe.SAMPLE_LABELS, **labels}
    line("labels: " + ", ".join(f"{k}={v}" for k, v in labels.items()))
    for text in probe.routing(ruleset, labels, now):
        line(text)
    engine = context_of(ctx).engine if target.type == "ticket" else None
    with httpx.Client(follow_redirects=False) as client:
        for resolved in ([False, True] if resolve else [False]):
            what = "resolved" if resolved else "firing"
            notification = probe.sample(labels, now, settings.dashboard_url, resolved=resolved)
            try:
                if engine is not None:
                    with engine.begin() as conn:
                        done = send(target, notification, client=client, environ=os.environ,
                                    tickets=TicketStore(conn, now))
                else:
                    done = send(target, notification, client=client, environ=os.environ)
            except DeliveryError as exc:
                message = str(exc)
                for secret in target.secrets(os.environ):
                    message = message.replace(secret, "***")
                fail(f"{what} test notification to {receiver} ({target.type}) failed: {message[:300]}")
            line(f"{what} test notification to {receiver} ({target.type}): {done}")
