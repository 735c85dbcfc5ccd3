"""Where a deadline is displayed, a business-day deadline shows its calendar: the transaction
page (story and verdicts) and the Open breaches page. Real Postgres, AppTest; the expected
local dates are worked out from the order times with zoneinfo alone."""

# ruff: noqa: F811  (the `app_env` fixture comes from test_dashboard)
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from controltower.settings import Settings
from metrics import definitions, jobs
from tests.app.test_dashboard import app_env, plain, run, table_with  # noqa: F401 (fixtures)
from tests.metrics.helpers import ev, ingest

# every day a business day, no cut-off or pickup: due at the end of the local day N days on
YAML = """\
calendars:
  seven:
    timezone: America/New_York
    business_days: [mon, tue, wed, thu, fri, sat, sun]
slas:
  - name: handling_time
    kind: milestone_latency
    from: order.received
    to: shipment.shipment_confirmed
    target: 2d
    calendar: seven
"""
NY = ZoneInfo("America/New_York")
SHOWN = "America/New_York, calendar seven: Mon–Sun"


def _day(moment: datetime, days: int) -> date:
    return moment.astimezone(NY).date() + timedelta(days=days)


def _words(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b}, end of day {SHOWN}"


def test_deadlines_show_their_calendar(engine: Engine, settings: Settings, app_env: None) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    late, fresh = now - timedelta(days=6), now - timedelta(hours=1)
    defs = definitions.loads(YAML, "slas.yaml")
    definitions.publish(engine, defs)
    ingest(engine, settings, [ev("CAL-LATE", "order.received", late), ev("CAL-NEW", "order.received", fresh)], now=now)
    jobs.refresh(engine, defs, now)

    at = run("views/transaction.py", id="CAL-NEW")
    verdicts = table_with(at, "Due")
    row = verdicts[verdicts["SLA"] == "handling_time"].iloc[0]
    assert (row["State"], row["Due"]) == ("pending", _words(_day(fresh, 2)))
    assert plain(at.info[0].value).endswith(f"due by {_words(_day(fresh, 2))}.")

    at = run("views/transaction.py", id="CAL-LATE")
    assert plain(at.info[0].value).endswith(f"overdue since {_words(_day(late, 2))}.")

    at = run("views/breaches.py", sla="handling_time")
    table = table_with(at, "Overdue by")
    assert list(table["Correlation id"]) == ["CAL-LATE"]
    assert list(table["Due"]) == [_words(_day(late, 2))]
