"""The product's shared vocabulary: health ranks, human durations, timestamps and labels.

Every room that shows or compares these imports them from here, so the API, the CLI, the
notifications and the dashboard speak one language. Pure functions; no I/O, no pandas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

HEALTHS = ("ok", "warn", "critical")
HEALTH_RANK = {"ok": 0, "warn": 1, "critical": 2}
ACRONYMS = {"erp": "ERP", "pos": "POS", "wms": "WMS", "sku": "SKU", "3pl": "3PL", "edi": "EDI", "api": "API"}
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end" marker


def worst(healths: Iterable[Any], *, empty: str = "ok") -> str:
    """The worst of `healths` (`critical` > `warn` > `ok`); unknown values rank below `ok`."""
    values = [h for h in healths if isinstance(h, str)]
    if not values:
        return empty
    return max(values, key=lambda h: HEALTH_RANK.get(h, -1))


def human_duration(ms: float | None) -> str:
    """Milliseconds as a short human duration: `850 ms`, `42 s`, `4 min 5 s`, `2 h 10 min`, `3 d 4 h`."""
    if ms is None:
        return "–"
    try:
        ms = float(ms)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(ms):
        return "–"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1000:
        return f"{sign}{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{sign}{seconds:.0f} s" if seconds >= 10 else f"{sign}{seconds:.1f} s"
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h" if hours else f"{sign}{days} d"
    if hours:
        return f"{sign}{hours} h {minutes} min" if minutes else f"{sign}{hours} h"
    return f"{sign}{minutes} min {secs} s" if secs else f"{sign}{minutes} min"


def rfc3339(moment: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as every API response and notification writes timestamps."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def label(slug: str | None) -> str:
    """`erp_posting` → `ERP posting`; a hop, SLA or channel name as people read it."""
    if not slug:
        return ""
    words = str(slug).replace(".", " · ").split("_")
    words = [ACRONYMS.get(w, w) for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:]
