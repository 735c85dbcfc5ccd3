"""Page components: the HTML cards and strips the pages show, and the health colouring of tables.

Every value that reaches HTML here goes through `escaping.html` (and Markdown through
`escaping.md`): an event field is text, whatever it contains. Pure string builders; no
Streamlit, no database, so they are tested with plain pytest.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from app.escaping import html, md
from app.shaping import DEFAULT_MAX_AGE_MS, HEALTH_SYMBOL, STATE_HEALTH, channel_name
from controltower.vocab import human_duration, label

HEALTH_COLOUR = {"ok": "#1a7f37", "warn": "#bf8700", "critical": "#cf222e", "unknown": "#6e7781"}
MUTED = "color:#57606a"


def colour_of(health: Any) -> str:
    return HEALTH_COLOUR.get(health if isinstance(health, str) else "unknown", HEALTH_COLOUR["unknown"])


def _badge(text: Any, colour: str) -> str:
    return (f'<span style="background:{colour};color:#fff;border-radius:12px;padding:1px 10px;font-size:0.8rem;'
            f'font-weight:600;text-transform:uppercase">{html(text)}</span>')


def tile(row: pd.Series | dict[str, Any]) -> str:
    """One channel's health card (a row of `shaping.channel_tiles`)."""
    colour = colour_of(row["health"])
    counts = f"{row['critical']} critical · {row['warn']} warn · {row['ok']} ok"
    breaches = f" · {row['open_breaches']:,} open breaches" if row["open_breaches"] else ""
    sla = html(label(row["sla"])) if row["health"] != "ok" else ""
    return (
        f'<div style="border:1px solid #d0d7de;border-left:8px solid {colour};border-radius:8px;'
        f'padding:10px 14px;margin-bottom:10px;min-height:128px;background:#fff">'
        f'<div style="display:flex;flex-wrap:wrap;gap:4px;justify-content:space-between;align-items:center">'
        f'<span style="font-size:1.25rem;font-weight:650">{html(channel_name(row["channel"]))}</span>'
        f'{_badge(row["health"], colour)}</div>'
        f'<div style="font-size:0.85rem;{MUTED};margin-top:2px">{sla}</div>'
        f'<div style="font-size:0.92rem;margin-top:4px;line-height:1.3">{html(row["reason"] or "")}</div>'
        f'<div style="font-size:0.75rem;{MUTED};margin-top:6px">{counts}{breaches}</div></div>'
    )


def tiles_row(rows: list[dict[str, Any]]) -> str:
    """Channel cards side by side in one responsive grid (one element instead of one per column)."""
    cards = "".join(tile(r) for r in rows)
    return (f'<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:0 12px">'
            f"{cards}</div>")


def hop_strip(channel: str, hops: pd.DataFrame) -> str:
    """One channel's hops in order, each chip coloured by health with volume, backlog and p95."""
    chips = []
    for _, hop in hops.sort_values("position").iterrows():
        colour = colour_of(hop["health"])
        detail = f"{int(hop['volume']):,} in · <b>backlog {int(hop['backlog']):,}</b>"
        if not pd.isna(hop["p95_ms"]):
            detail += f"<br>p95 {html(human_duration(hop['p95_ms']))}"
        if isinstance(hop.get("queues"), str) and hop["queues"]:  # the queue probe's word on this hop
            detail += f"<br>{html(hop['queues'])}"
        # a frame with some reasons holds NaN (not None) for the others: never show "nan"
        tip = html(hop["reason"] if isinstance(hop["reason"], str) and hop["reason"] else hop["health"])
        chips.append(
            f'<div title="{tip}" style="flex:1;min-width:120px;border:1px solid {colour};border-top:5px solid {colour};'
            f'border-radius:6px;padding:4px 8px;background:{colour}14">'
            f'<div style="font-weight:600;font-size:0.85rem">{html(label(hop["hop"]))}</div>'
            f'<div style="font-size:0.72rem;{MUTED};line-height:1.35">{detail}</div></div>'
        )
    arrow = '<div style="align-self:center;color:#8c959f;font-size:1.1rem">→</div>'
    return (
        f'<div style="display:flex;gap:6px;align-items:stretch;margin-bottom:8px">'
        f'<div style="width:90px;align-self:center;font-weight:650">{html(channel)}</div>'
        + arrow.join(chips)
        + "</div>"
    )


def health_banner(health: str, reason: str) -> str:
    """The channel page's one-line verdict: symbol, health and the worst SLA's reason."""
    colour = colour_of(health)
    symbol = HEALTH_SYMBOL.get(health, "?")
    return (f'<div style="border:1px solid #d0d7de;border-left:8px solid {colour};border-radius:8px;padding:8px 14px;'
            f'margin-bottom:8px"><b style="color:{colour}">{symbol} {html(health.upper())}</b> · {html(reason)}</div>')


def transaction_header(tx: dict[str, Any]) -> str:
    """An HTML card with the transaction's identity: order, channel, status, milestone, counts."""
    colour = HEALTH_COLOUR[STATE_HEALTH.get(tx["status"], "ok")]
    cells = [
        ("Channel", tx["channel"] or "–"),
        ("Order id", tx["order_id"] or "–"),
        ("Flow", tx["flow"]),
        ("Last milestone", tx["last_milestone"]),
        ("Last system", tx["last_system"] or "–"),
        ("Events", f"{tx['event_count']} ({tx['error_count']} errors, {tx['retry_count']} retries)"),
        ("First event", (tx["first_event_at"] or "")[:19].replace("T", " ")),
        ("Last event", (tx["last_event_at"] or "")[:19].replace("T", " ")),
    ]
    grid = "".join(
        f'<div><div style="font-size:0.75rem;{MUTED}">{html(k)}</div>'
        f'<div style="font-size:1.02rem;font-weight:600;word-break:break-all">{html(v)}</div></div>'
        for k, v in cells
    )
    members, systems = tx.get("correlation_ids") or [], _systems(tx)
    joined = ""
    if len(members) > 1:  # a business transaction stitched from several systems' ids
        joined = f" · one business transaction of {len(members)} correlation ids"
        joined += f" across {html(', '.join(systems))}" if systems else ""
    return (
        f'<div style="border:1px solid #d0d7de;border-left:8px solid {colour};border-radius:8px;padding:12px 16px;'
        f'margin-bottom:12px"><div style="display:flex;align-items:center;gap:12px;margin-bottom:8px">'
        f'<span style="font-size:1.35rem;font-weight:700">{html(tx["order_id"] or tx["correlation_id"])}</span>'
        f'{_badge(tx["status"], colour)}'
        f'<span style="{MUTED};font-size:0.85rem">correlation id <code>{html(tx["correlation_id"])}</code>{joined}'
        f'</span></div><div style="display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:8px 16px">'
        f"{grid}</div></div>"
    )


def _systems(tx: dict[str, Any]) -> list[str]:
    """The systems of a business transaction's members, earliest member first, each once."""
    return list(dict.fromkeys(s for m in tx.get("members") or [] for s in m.get("systems") or []))


KEYS_SHOWN = 20  # values of one kind the keys line names; a big business's rest is counted


def keys_line(keys: dict[str, list[Any]]) -> str:
    """A transaction's business keys as `<b>Kind:</b> <code>value</code>` HTML; a value cannot
    leave its code element whatever it contains (backticks included). At most KEYS_SHOWN values
    of a kind are named, then how many more there are."""
    parts = [
        f"<b>{html(label(kind))}:</b> " + ", ".join(f"<code>{html(v)}</code>" for v in values[:KEYS_SHOWN])
        + (f" and {len(values) - KEYS_SHOWN:,} more" if len(values) > KEYS_SHOWN else "")
        for kind, values in keys.items()
    ]
    return '<div style="margin-bottom:8px">' + " &nbsp; ".join(parts) + "</div>"


# -- heat grids as HTML tables: no chart library to load or lay out, readable without colour ----------
GRID_COLOURS = {"unknown": "#eaeef2", "ok": "#aceebb", "warn": "#f8d97a", "critical": "#ff8a80"}
_TABLE = 'style="border-collapse:separate;border-spacing:3px;width:100%;font-size:0.85rem;table-layout:fixed"'
_HEAD = 'style="font-weight:600;text-align:center;padding:2px 4px;overflow-wrap:anywhere"'
_ROW_HEAD = 'style="font-weight:600;text-align:left;padding:2px 6px;overflow-wrap:anywhere"'
_CELL = "text-align:center;padding:6px 4px;border-radius:4px;color:#1f2328"


def _grid(title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> str:
    head = "".join(f"<th scope=\"col\" {_HEAD}>{html(c)}</th>" for c in columns)
    body = "".join(f"<tr><th scope=\"row\" {_ROW_HEAD}>{html(name)}</th>{''.join(cells)}</tr>" for name, cells in rows)
    return (f'<div style="font-weight:600;font-size:15px;margin:4px 0 6px">{html(title)}</div>'
            f'<table {_TABLE}><thead><tr><th style="width:92px"></th>{head}</tr></thead><tbody>{body}</tbody></table>')


def health_grid(grid: pd.DataFrame) -> str:
    """Channels × SLAs (rows of `shaping.health_grid`): each cell coloured by health and showing
    its symbol and value; the reason is the cell's tooltip. `all channels` comes last."""
    names = set(grid["channel"])
    channels = sorted(names - {"all channels"}) + (["all channels"] if "all channels" in names else [])
    slas = sorted(set(grid["sla"]))
    cells = {(r.channel, r.sla): r for r in grid.itertuples(index=False)}
    rows = []
    for channel in channels:
        out = []
        for sla in slas:
            r = cells.get((channel, sla))
            if r is None:
                out.append(f'<td style="{_CELL};background:#f6f8fa"></td>')
                continue
            tip = html(f"{channel} · {sla}: {r.health.upper()} · {r.value}" + (f" · {r.reason}" if r.reason else ""))
            out.append(f'<td title="{tip}" data-health="{html(r.health)}" style="{_CELL};'
                       f'background:{GRID_COLOURS.get(r.health, GRID_COLOURS["unknown"])}">'
                       f"<b>{html(r.symbol)}</b> {html(r.value)}</td>")
        rows.append((channel, out))
    return _grid("Channels × SLAs (✓ ok · ! warn · ✖ critical)", [label(s) for s in slas], rows)


def _age_text(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def freshness_grid(fresh: pd.DataFrame, limits: dict[str, float]) -> str:
    """Channel × location: minutes since the last successful sync; a cell past its channel's max
    age is orange and marked `!`, one past half of it yellow."""
    pivot = fresh.pivot_table(index="channel", columns="location", values="age_s", aggfunc="max")
    rows = []
    for channel in pivot.index:
        limit_s = limits.get(channel, DEFAULT_MAX_AGE_MS) / 1000
        out = []
        for location in pivot.columns:
            age = pivot.at[channel, location]
            if pd.isna(age):
                out.append(f'<td style="{_CELL};background:#f6f8fa"></td>')
                continue
            stale = age > limit_s
            colour = "#ffb77c" if stale else ("#fff8c5" if age > limit_s / 2 else "#dafbe1")
            text = ("! " if stale else "") + _age_text(age / 60)
            tip = html(f"{channel} · {location}: last sync {_age_text(age / 60)} ago")
            out.append(f'<td title="{tip}" style="{_CELL};background:{colour}">{html(text)}</td>')
        rows.append((str(channel), out))
    return _grid("Inventory freshness (age of last sync per location; ! past the channel's max age)",
                 [str(c) for c in pivot.columns], rows)


def quoted(value: Any) -> str:
    """A user's input quoted inside a Markdown sentence, as literal text."""
    return f"“{md(value)}”"


def style_health(df: pd.DataFrame, *columns: str) -> Any:
    """`df` as a Styler whose health/state `columns` are coloured (ok green, warn amber, critical red)."""

    def colour(value: Any) -> str:
        health = value if value in HEALTH_COLOUR else STATE_HEALTH.get(value, "unknown")
        return f"color: {HEALTH_COLOUR[health]}; font-weight: 600"

    return df.style.map(colour, subset=list(columns))


def style_severity(df: pd.DataFrame, column: str, severity_health: dict[str, str]) -> Any:
    def colour(value: Any) -> str:
        return f"color: {HEALTH_COLOUR[severity_health.get(value, 'unknown')]}; font-weight: 600"

    return df.style.map(colour, subset=[column])
