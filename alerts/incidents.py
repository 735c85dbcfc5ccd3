"""Incidents, the pure part: which incident a firing alert belongs to, and what the incident is called.

Alerts that share a cause become one incident with one page. The cause comes from the hop
health the SLA engine computes (`hop_health`: per channel and hop, its position upstream first,
its health and the SLA judging it):

- an alert whose SLA judges a hop (labels `sla`, `channel`) belongs to the most upstream hop of
  its channel that is not ok, at or above its own hop (its own hop when nothing upstream is
  red): key "hop:<hop>". Unposted orders on five channels, the erp_posting burn rates and the
  warehouse release behind a red ERP posting hop are then one incident, "hop:ERP posting";
- an alert whose SLA judges no hop: key "sla:<sla>".

Grouping is sticky (an alert stays in the incident it joined until the incident resolves) and
there is at most one open incident per key; that bookkeeping, the timeline and the
notifications are `alerts.incidents_store`'s. The title names the hop, its channels and the
usual cause: "ERP posting is breaching on all 5 channels since 09:12 UTC → the ERP or the
middleware in front of it" ("all" when every channel that has the hop is red, "on amazon" for
one). Configured by the top-level `incidents:` key of the rules file (`parse_policy`). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controltower.yamlfile import Located

GROUP_BY = ("hop", "none")
SEVERITY_RANK = {"page": 0, "ticket": 1, "info": 2}


@dataclass(frozen=True)
class IncidentPolicy:
    """`incidents: {group_by: hop}` (default): alerts sharing a cause page once per incident;
    `group_by: none`: every rule notifies on its own (grouped by alertname, as before)."""

    group_by: str = "hop"

    @property
    def enabled(self) -> bool:
        return self.group_by != "none"


def parse_policy(doc: Located, raw: Any) -> IncidentPolicy:
    if raw is None:
        return IncidentPolicy()
    if not isinstance(raw, dict):
        raise doc.error("incidents: expected a mapping, e.g. {group_by: hop}", "incidents")
    for key in raw:
        if key != "group_by":
            raise doc.error(f"unknown field {key!r} in incidents (group_by)", "incidents", key)
    group_by = raw.get("group_by", "hop")
    if group_by not in GROUP_BY:
        raise doc.error(f"incidents.group_by {group_by!r} is not one of {', '.join(GROUP_BY)}", "incidents", "group_by")
    return IncidentPolicy(str(group_by))


@dataclass(frozen=True)
class Hop:
    """One `hop_health` row."""

    channel: str
    hop: str
    position: int
    health: str
    sla: str | None
    cause: str | None


@dataclass(frozen=True)
class Cause:
    """What an incident is about: its key, the hop (if any), the hop's usual cause."""

    key: str
    hop: str | None
    cause: str | None
    sla: str


class HopMap:
    """The hop health of every channel, as read once per evaluation."""

    def __init__(self, hops: Iterable[Hop]) -> None:
        self.hops = tuple(hops)

    def cause_of(self, labels: Mapping[str, str]) -> Cause:
        sla, channel = labels.get("sla", ""), labels.get("channel", "")
        judged = [h for h in self.hops if h.sla == sla]
        if not judged:
            return Cause(f"sla:{sla}", None, None, sla)
        own = next((h for h in judged if h.channel == channel), None)
        if own is None:  # the hop exists, not (yet) on this channel
            return self._cause(judged[0])
        upstream = [h for h in self.hops if h.channel == channel and h.position <= own.position and h.health != "ok"]
        return self._cause(min(upstream, key=lambda h: h.position) if upstream else own)

    def _cause(self, hop: Hop) -> Cause:
        cause = hop.cause or next((h.cause for h in self.hops if h.hop == hop.hop and h.cause), None)
        return Cause(f"hop:{hop.hop}", hop.hop, cause, hop.sla or "")

    def channels(self, hop: str) -> list[str]:
        return sorted({h.channel for h in self.hops if h.hop == hop})

    def red_channels(self, hop: str) -> list[str]:
        return sorted({h.channel for h in self.hops if h.hop == hop and h.health != "ok"})


def where(channels: Sequence[str], total: int) -> str:
    """"on all 5 channels", "on amazon", "on 2 of 5 channels (amazon, ebay)"."""
    n = len(channels)
    if n == 0:
        return "on no channel"
    if n == 1:
        return f"on {channels[0]}"
    if n == total:
        return f"on all {n} channels"
    of = f" of {total}" if total > n else ""
    return f"on {n}{of} channels ({', '.join(channels)})"


def title(cause: Cause, hops: HopMap, alert_channels: Iterable[str], since: datetime) -> str:
    """The incident's one-line title (see the module docstring)."""
    mine = sorted(set(alert_channels))
    at = since.strftime("%H:%M UTC")
    if cause.hop is None:
        return f"{cause.sla} is breaching {where(mine, len(mine))} since {at}"
    red = sorted(set(hops.red_channels(cause.hop)) | set(mine))
    total = len(set(hops.channels(cause.hop)) | set(red))
    text = f"{cause.hop} is breaching {where(red, total)} since {at}"
    return f"{text} → {cause.cause}" if cause.cause else text


def worst(severities: Iterable[str]) -> str:
    return min(severities, key=lambda s: SEVERITY_RANK.get(s, 9), default="info")


def sum_impact(impacts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Orders and order value at risk summed over alerts (value only where an alert priced it)."""
    orders, value, priced = 0, 0.0, False
    for impact in impacts:
        orders += int(impact.get("orders_at_risk") or 0)
        if "order_value_at_risk" in impact:
            value += float(impact["order_value_at_risk"])
            priced = True
    out: dict[str, Any] = {"orders_at_risk": orders}
    if priced:
        out["order_value_at_risk"] = round(value, 2)
    return out


def resolved_text(summary: str, resolved_at: datetime) -> str:
    """What the resolved notification says: the firing-time text plus when it resolved."""
    return f"{summary} (resolved at {resolved_at.strftime('%H:%M UTC')})"
