"""SLA definitions: the YAML file, validated with line-precise errors, and their table.

`load(path)` returns `Definitions` (SLAs, hops, scorecards, business calendars: parsed by
`controltower.calendars`, chosen per SLA with `calendar:`) or raises ConfigError naming
`file:line`. Unknown milestone names are allowed (new flows need no code change) but returned
as warnings. `publish(engine, definitions)` writes the full latency definitions (exclusions,
closing milestones, labels included) to `sla_definitions`, which the core's transaction view
reads to give a single transaction its verdicts from `controltower.slajudge`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine

from controltower import calendars, slajudge, yamlfile
from controltower.errors import ConfigError
from controltower.schema.metrics import sla_definitions
from controltower.settings import parse_duration
from metrics import queues

KINDS = ("milestone_latency", "deadline", "freshness", "rate", "absence", "orphans", "duplicate_rate", *sorted(queues.KINDS))
# the identity graph's signals (metrics.signals): their values are a count and a ratio
SIGNAL_UNITS = {"orphans": "count", "duplicate_rate": "ratio"}
# a business transaction that reached none of these and has an identity key is an orphan
DEFAULT_ORIGINS = ("order.received", "return.requested")
# rate metric → the unit of its value (a ratio is shown as a percentage, a count as a number)
RATE_METRICS = {"error_ratio": "ratio", "dead_letters": "count", "retries": "count", "throughput": "count"}
KNOWN_MILESTONES = frozenset(
    f"{flow}.{stage}"
    for flow, stages in {
        "order": "received validated acknowledged erp_posted",
        "fulfilment": "released accepted picked shipped",
        "shipment": "label_created shipment_confirmed first_scan delivered",
        "inventory": "changed computed submitted processed published",
        "cancellation": "requested propagated confirmed",
        "return": "requested authorized received return_received inspected refund_posted credit_posted",
        "settlement": "available received parsed matched posted settled",
        "pos": "uploaded validated statement_calculated statement_posted",
        "channel": "poll_completed webhook_received throttled token_refreshed",
    }.items()
    for stage in stages.split()
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_MILESTONE = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*$")
_COMMON = {
    "name", "kind", "description", "objective", "period", "warn_open_breaches", "critical_open_breaches",
    "channels", "exclude_channels", "closed_by", "open_label", "calendar",
}
_KEYS = {
    "milestone_latency": _COMMON | {"from", "to", "target", "targets"},
    "deadline": _COMMON | {"from", "to", "deadline_attribute", "target"},
    "freshness": {"name", "kind", "description", "milestone", "key", "max_age", "max_ages", "critical_factor"},
    "rate": {"name", "kind", "description", "metric", "flow", "max", "critical", "min_events"},
    "absence": {"name", "kind", "description", "max_silence", "max_silences", "critical_factor"},
    "orphans": {"name", "kind", "description", "origins", "max", "critical"},
    "duplicate_rate": {"name", "kind", "description", "max", "critical", "min_orders"},
} | {kind: {"name", "kind", "description"} | keys for kind, keys in queues.KEYS.items()}


@dataclass(frozen=True)
class SLA:
    name: str
    kind: str
    description: str = ""
    from_milestone: str | None = None
    to_milestone: str | None = None
    target_ms: int | None = None
    targets_ms: dict[str, int] = field(default_factory=dict)
    deadline_attribute: str | None = None
    objective: float | None = None
    period_s: float = 28 * 86400
    warn_open_breaches: int = 1
    critical_open_breaches: int = 25
    milestone: str | None = None  # freshness
    key: str | None = None  # freshness: attribute naming the key (location)
    metric: str | None = None  # rate
    flow: str | None = None  # rate
    max: float | None = None  # rate: warn above; freshness/absence: max age/silence in ms
    critical: float | None = None
    min_events: int = 20
    maxes_ms: dict[str, int] = field(default_factory=dict)  # freshness/absence per channel
    critical_factor: float = 2.0
    channels: tuple[str, ...] = ()  # latency: only these channels (empty: all)
    exclude_channels: tuple[str, ...] = ()  # latency: channels whose flow has no such step (POS: no warehouse)
    closed_by: tuple[str, ...] = ()  # latency: milestones that end the obligation (a cancelled order)
    open_label: str | None = None  # latency: what an open breach is called ("unposted")
    origins: tuple[str, ...] = ()  # orphans: milestones that give a business transaction its origin
    min_orders: int = 20  # duplicate_rate: below this many orders a ratio says nothing
    calendar: calendars.Choice | None = None  # latency: whole-day targets count business days
    queues: tuple[str, ...] = ()  # queue kinds (metrics.queues): only these queues (empty: all)
    window_ms: int | None = None  # queue_growing: how long the depth must have grown

    def target_for(self, channel: str) -> int | None:
        return self.targets_ms.get(channel, self.target_ms)

    def max_ms_for(self, channel: str) -> float | None:
        return self.maxes_ms.get(channel, self.max)

    @property
    def is_latency(self) -> bool:
        return self.kind in slajudge.LATENCY_KINDS

    @property
    def unit(self) -> str:
        """`ms` for latencies, ages and silences; a rate metric's own unit (`ratio`, `count`)."""
        if self.kind in SIGNAL_UNITS:
            return SIGNAL_UNITS[self.kind]
        if self.kind in queues.UNITS:
            return queues.UNITS[self.kind]
        return RATE_METRICS.get(self.metric or "", "count") if self.kind == "rate" else "ms"

    @property
    def judged(self) -> slajudge.Definition:
        """What the SLA judge and the transaction view need of this latency SLA."""
        assert self.from_milestone and self.to_milestone, f"{self.name} is not a latency SLA"
        return slajudge.Definition(
            name=self.name, kind=self.kind, from_milestone=self.from_milestone, to_milestone=self.to_milestone,
            target_ms=self.target_ms, targets_ms=self.targets_ms, deadline_attribute=self.deadline_attribute,
            channels=self.channels, exclude_channels=self.exclude_channels, closed_by=self.closed_by,
            open_label=self.open_label, objective=self.objective, description=self.description,
            calendar=self.calendar,
        )


@dataclass(frozen=True)
class Hop:
    hop: str
    sla: str
    cause: str | None = None  # what usually breaks when this hop is red (incidents name it)


@dataclass(frozen=True)
class Scorecard:
    channel: str
    metric: str
    sla: str
    window_s: float
    limit: float


@dataclass(frozen=True)
class Definitions:
    slas: tuple[SLA, ...]
    hops: tuple[Hop, ...] = ()
    scorecards: tuple[Scorecard, ...] = ()
    warnings: tuple[str, ...] = ()
    source: str = "built-in"
    calendars: tuple[calendars.Calendar, ...] = ()

    def get(self, name: str) -> SLA | None:
        return next((s for s in self.slas if s.name == name), None)

    @property
    def latency(self) -> tuple[SLA, ...]:
        return tuple(s for s in self.slas if s.is_latency)

    @property
    def orphan_origins(self) -> tuple[str, ...]:
        """The origin milestones orphans are judged by (every `orphans` SLA has the same)."""
        return next((s.origins for s in self.slas if s.kind == "orphans"), DEFAULT_ORIGINS)


def default_path() -> Path:
    return Path(str(resources.files("metrics") / "slas.yaml"))


def load(path: Path | str | None = None) -> Definitions:
    return parse(yamlfile.load(path or default_path()))


def loads(text: str, source: str = "<string>") -> Definitions:
    return parse(yamlfile.loads(text, source))


class _Checker:
    def __init__(self, doc: yamlfile.Located) -> None:
        self.doc = doc
        self.warnings: list[str] = []

    def fail(self, message: str, *path: Any) -> ConfigError:
        return self.doc.error(message, *path)

    def duration_ms(self, value: Any, *path: Any, zero_ok: bool = False) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(f"{path[-1]}: expected a duration like 15m or 4h, got {type(value).__name__}", *path)
        if isinstance(value, int | float) and value < 0:
            raise self.fail(f"{path[-1]}: must not be negative", *path)
        try:
            seconds = parse_duration(str(value), where=str(path[-1]))
        except ConfigError as exc:
            raise self.fail(str(exc), *path) from None
        if seconds < 0 or (seconds == 0 and not zero_ok):
            raise self.fail(f"{path[-1]}: must be greater than zero", *path)
        return int(seconds * 1000)

    def number(self, value: Any, *path: Any, low: float = 0.0, high: float | None = None, integer: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise self.fail(f"{path[-1]}: expected {'an integer' if integer else 'a number'}, got {value!r}", *path)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self.fail(f"{path[-1]}: {value} must be {bound}", *path)
        return value

    def text(self, value: Any, *path: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{path[-1]}: expected text, got {value!r}", *path)
        return value

    def text_list(self, value: Any, *path: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{path[-1]}: expected a list of names", *path)
        return tuple(value)

    def milestone(self, value: Any, *path: Any) -> str:
        text = self.text(value, *path)
        if not _MILESTONE.match(text):
            raise self.fail(f"{path[-1]}: {text!r} is not a milestone name like order.received", *path)
        if text not in KNOWN_MILESTONES:
            self.warnings.append(f"{self.doc.where(*path)}: milestone {text!r} is not a standard one (allowed; check the spelling)")
        return text

    def per_channel(self, value: Any, *path: Any, zero_ok: bool = False) -> dict[str, int]:
        if not isinstance(value, dict):
            raise self.fail(f"{path[-1]}: expected a mapping of channel to duration", *path)
        return {str(channel): self.duration_ms(v, *path, channel, zero_ok=zero_ok) for channel, v in value.items()}


def parse(doc: yamlfile.Located) -> Definitions:
    c = _Checker(doc)
    data = doc.data
    if not isinstance(data, dict) or "slas" not in data:
        raise c.fail("expected a mapping with an `slas:` list")
    unknown = set(data) - {"slas", "hops", "scorecards", "calendars"}
    if unknown:
        key = sorted(unknown)[0]
        raise c.fail(f"unknown section {key!r} (expected slas, hops, scorecards, calendars)", key)
    known = calendars.parse_calendars(doc, data["calendars"], "calendars") if "calendars" in data else {}
    if not isinstance(data["slas"], list) or not data["slas"]:
        raise c.fail("slas: expected a non-empty list", "slas")
    slas: list[SLA] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(data["slas"]):
        sla = _parse_sla(c, item, ("slas", i), known)
        if sla.name in seen:
            raise c.fail(f"duplicate SLA name {sla.name!r} (first defined on line {seen[sla.name]})", "slas", i, "name")
        seen[sla.name] = doc.line("slas", i, "name")
        slas.append(sla)
    origins = [(s, i) for i, s in enumerate(slas) if s.kind == "orphans"]
    for sla, i in origins[1:]:
        if sla.origins != origins[0][0].origins:
            raise c.fail(
                f"{sla.name}: origins differ from those of {origins[0][0].name} (line "
                f"{doc.line('slas', origins[0][1], 'name')}): one set of origins judges every orphan",
                "slas", i, "origins",
            )
    names = {s.name for s in slas}
    hops = []
    for i, item in enumerate(data.get("hops") or []):
        if not isinstance(item, dict) or not {"hop", "sla"} <= set(item) or not set(item) <= {"hop", "sla", "cause"}:
            raise c.fail("hops: each item needs `hop` and `sla` (and may name a `cause`)", "hops", i)
        if item["sla"] not in names:
            raise c.fail(f"hops: unknown SLA {item['sla']!r}", "hops", i, "sla")
        cause = c.text(item["cause"], "hops", i, "cause") if "cause" in item else None
        hops.append(Hop(c.text(item["hop"], "hops", i, "hop"), item["sla"], cause))
    scorecards = []
    for i, item in enumerate(data.get("scorecards") or []):
        path = ("scorecards", i)
        if not isinstance(item, dict) or set(item) != {"channel", "metric", "sla", "window", "limit"}:
            raise c.fail("scorecards: each item needs channel, metric, sla, window and limit", *path)
        target = next((s for s in slas if s.name == item["sla"]), None)
        if target is None or not target.is_latency:
            raise c.fail(f"scorecards: {item['sla']!r} is not a latency or deadline SLA", *path, "sla")
        scorecards.append(
            Scorecard(
                c.text(item["channel"], *path, "channel"),
                c.text(item["metric"], *path, "metric"),
                item["sla"],
                c.duration_ms(item["window"], *path, "window") / 1000,
                c.number(item["limit"], *path, "limit", high=1.0),
            )
        )
    return Definitions(tuple(slas), tuple(hops), tuple(scorecards), tuple(c.warnings), doc.source, tuple(known.values()))


def _parse_sla(c: _Checker, item: Any, path: tuple[Any, ...], known: dict[str, calendars.Calendar]) -> SLA:
    if not isinstance(item, dict):
        raise c.fail("each SLA must be a mapping", *path)
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise c.fail(f"name: {name!r} must be lower_snake_case (letters, digits, _)", *path, "name")
    kind = item.get("kind")
    if kind not in KINDS:
        raise c.fail(f"{name}: kind {kind!r} is not one of {', '.join(KINDS)}", *path, "kind")
    extra = sorted(set(item) - _KEYS[kind])
    if extra:
        raise c.fail(f"{name}: unknown key {extra[0]!r} for kind {kind}", *path, extra[0])

    def need(key: str) -> Any:
        if key not in item:
            raise c.fail(f"{name}: {kind} needs `{key}`", *path)
        return item[key]

    fields: dict[str, Any] = {"name": name, "kind": kind, "description": str(item.get("description", ""))}
    if kind in ("milestone_latency", "deadline"):
        fields["from_milestone"] = c.milestone(need("from"), *path, "from")
        fields["to_milestone"] = c.milestone(need("to"), *path, "to")
        if fields["from_milestone"] == fields["to_milestone"]:
            raise c.fail(f"{name}: from and to are the same milestone", *path, "to")
        if kind == "milestone_latency":
            # 0d is "the same business day" with a calendar (checked below), meaningless without one
            fields["target_ms"] = c.duration_ms(need("target"), *path, "target", zero_ok=True)
            fields["targets_ms"] = c.per_channel(item.get("targets", {}), *path, "targets", zero_ok=True)
        else:
            fields["deadline_attribute"] = c.text(need("deadline_attribute"), *path, "deadline_attribute")
            if "target" in item:  # fallback when a transaction carries no promise
                fields["target_ms"] = c.duration_ms(item["target"], *path, "target", zero_ok=True)
        if "objective" in item:
            fields["objective"] = c.number(item["objective"], *path, "objective", low=0.0, high=0.99999)
            if fields["objective"] <= 0:
                raise c.fail(f"{name}: objective must be above 0 (e.g. 0.99)", *path, "objective")
        for key in ("channels", "exclude_channels"):
            if key in item:
                fields[key] = c.text_list(item[key], *path, key)
        if "open_label" in item:
            fields["open_label"] = c.text(item["open_label"], *path, "open_label")
        if "closed_by" in item:
            fields["closed_by"] = tuple(c.milestone(m, *path, "closed_by", i) for i, m in enumerate(c.text_list(item["closed_by"], *path, "closed_by")))
        if "period" in item:
            fields["period_s"] = c.duration_ms(item["period"], *path, "period") / 1000
        for key in ("warn_open_breaches", "critical_open_breaches"):
            if key in item:
                fields[key] = int(c.number(item[key], *path, key, integer=True))
        if "calendar" in item:
            fields["calendar"] = calendars.parse_choice(c.doc, item["calendar"], known, *path, "calendar")
            _whole_days(c, name, fields, path)
        else:
            zero = [("target",)] if fields.get("target_ms") == 0 else []
            zero += [("targets", ch) for ch, ms in fields.get("targets_ms", {}).items() if ms == 0]
            if zero:
                raise c.fail(f"{zero[0][-1]}: must be greater than zero (0d, the same business day, needs a calendar)",
                             *path, *zero[0])
    elif kind == "freshness":
        fields["milestone"] = c.milestone(need("milestone"), *path, "milestone")
        if "key" in item:
            fields["key"] = c.text(item["key"], *path, "key")
        fields["max"] = c.duration_ms(need("max_age"), *path, "max_age")
        fields["maxes_ms"] = c.per_channel(item.get("max_ages", {}), *path, "max_ages")
        if "critical_factor" in item:
            fields["critical_factor"] = c.number(item["critical_factor"], *path, "critical_factor", low=1.0)
    elif kind in SIGNAL_UNITS:
        _parse_signal(c, item, path, fields)
    elif kind in queues.KINDS:
        queues.parse(c, item, path, fields)
    elif kind == "absence":
        fields["max"] = c.duration_ms(need("max_silence"), *path, "max_silence")
        fields["maxes_ms"] = c.per_channel(item.get("max_silences", {}), *path, "max_silences")
        if "critical_factor" in item:
            fields["critical_factor"] = c.number(item["critical_factor"], *path, "critical_factor", low=1.0)
    else:
        metric = need("metric")
        if metric not in RATE_METRICS:
            raise c.fail(f"{name}: metric {metric!r} is not one of {', '.join(RATE_METRICS)}", *path, "metric")
        fields["metric"] = metric
        high = 1.0 if RATE_METRICS[metric] == "ratio" else None
        fields["max"] = c.number(need("max"), *path, "max", high=high)
        if "critical" in item:
            fields["critical"] = c.number(item["critical"], *path, "critical", high=high)
            if fields["critical"] < fields["max"]:
                raise c.fail(f"{name}: critical ({fields['critical']}) is below max ({fields['max']})", *path, "critical")
        if "flow" in item:
            fields["flow"] = c.text(item["flow"], *path, "flow")
        if "min_events" in item:
            fields["min_events"] = int(c.number(item["min_events"], *path, "min_events", integer=True))
    if fields.get("warn_open_breaches", 1) > fields.get("critical_open_breaches", 25):
        raise c.fail(f"{name}: warn_open_breaches is above critical_open_breaches", *path, "warn_open_breaches")
    return SLA(**fields)


def _whole_days(c: _Checker, name: str, fields: dict[str, Any], path: tuple[Any, ...]) -> None:
    """With a calendar, targets count business days: each must be a whole number of days."""
    targets = [(fields.get("target_ms"), ("target",))] + [(ms, ("targets", ch)) for ch, ms in fields.get("targets_ms", {}).items()]
    for ms, where in targets:
        if ms is not None and calendars.whole_days(ms) is None:
            raise c.fail(f"{name}: with a calendar, {where[-1]} must be a whole number of business days like 2d, "
                         f"got {ms / calendars.DAY_MS:g} days", *path, *where)


def _parse_signal(c: _Checker, item: dict[str, Any], path: tuple[Any, ...], fields: dict[str, Any]) -> None:
    """`orphans`: a count per channel (warn above `max`, critical above `critical`) over origin
    milestones; `duplicate_rate`: duplicate orders / orders received, with `min_orders`."""
    name, kind = fields["name"], fields["kind"]
    ratio = kind == "duplicate_rate"
    high = 1.0 if ratio else None
    if "max" not in item:
        raise c.fail(f"{name}: {kind} needs `max`", *path)
    fields["max"] = c.number(item["max"], *path, "max", high=high, integer=not ratio)
    if "critical" in item:
        fields["critical"] = c.number(item["critical"], *path, "critical", high=high, integer=not ratio)
        if fields["critical"] < fields["max"]:
            raise c.fail(f"{name}: critical ({fields['critical']}) is below max ({fields['max']})", *path, "critical")
    if kind == "orphans":
        origins = item.get("origins", list(DEFAULT_ORIGINS))
        if not isinstance(origins, list | tuple) or not origins:
            raise c.fail("origins: expected a non-empty list of milestones like order.received", *path, "origins")
        fields["origins"] = tuple(sorted({c.milestone(m, *path, "origins") for m in origins}))
    else:
        fields["flow"] = "order"
        if "min_orders" in item:
            fields["min_orders"] = int(c.number(item["min_orders"], *path, "min_orders", integer=True))


def publish(engine: Engine, definitions: Definitions) -> None:
    """Replace `sla_definitions` with every SLA: the API and the dashboard judge a single
    transaction from the latency rows with the same rules as the SLA table, and read each SLA's
    `unit` (ms, ratio, count) from `definition` instead of knowing SLA names."""
    rows = []
    for s in definitions.slas:
        extra = {"unit": s.unit, "source": definitions.source}
        if s.is_latency:
            rows.append(s.judged.row(extra=extra | {"period_s": s.period_s}))
        else:
            rows.append({
                "name": s.name, "kind": s.kind, "from_milestone": None, "to_milestone": None, "default_target_ms": None,
                "targets_ms": {}, "deadline_attribute": None, "objective": None, "description": s.description,
                "definition": extra | {"metric": s.metric, "milestone": s.milestone, "max": s.max, "critical": s.critical}
                | ({"origins": list(s.origins)} if s.origins else {}),
            })
    with engine.begin() as conn:
        conn.execute(sla_definitions.delete().where(sla_definitions.c.name.not_in([r["name"] for r in rows])))
        if rows:
            # the time is a value, not now() in DO UPDATE: Citus refuses non-IMMUTABLE functions there
            at = conn.execute(sa.text("SELECT now()")).scalar_one()
            stmt = insert(sla_definitions).values([r | {"updated_at": at} for r in rows])
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={c: stmt.excluded[c] for c in (*rows[0], "updated_at") if c != "name"},
                )
            )
