"""Channel health (default page): which channel is red, and at which hop the delay sits."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

import pandas as pd
import streamlit as st

from app import charts, data

settings = data.settings()
engine = data.engine()

st.title("Channel health")
data.require_data(engine)


@st.fragment(run_every=max(1.0, settings.refresh_seconds))
def headline() -> None:
    counts = data.cached(data.headline_counts)(engine)
    cols = st.columns(4)
    cols[0].metric("Orders received (last hour)", f"{counts['orders_last_hour']:,}", border=True)
    cols[1].metric("Open breaches", f"{counts['open_breaches']:,}", border=True,
                   help="Open SLA items past their deadline (see Open breaches)")
    cols[2].metric("Firing alerts", f"{counts['firing_alerts']:,}", border=True)
    cols[3].metric("Dead letters (last hour)", f"{counts['dead_letters_last_hour']:,}", border=True)


headline()

controls = st.columns([1.2, 3, 1.2])
window = controls[0].segmented_control("SLA window", ["1h", "24h"], default="1h", key="window") or "1h"
known_channels = sorted(set(data.cached(data.sla_status)(engine, window)["channel"]) - {"*"})
chosen = controls[1].multiselect("Channels", known_channels, key="channels", placeholder="All channels")
hours = controls[2].selectbox("Charts: last", [1, 3, 6, 12, 24], index=2, key="hours", format_func=lambda h: f"{h} h")


def _tile(row: pd.Series) -> str:
    colour = data.HEALTH_COLOUR.get(row["health"], data.HEALTH_COLOUR["unknown"])
    name = "all channels" if row["channel"] == "*" else row["channel"]
    counts = f"{row['critical']} critical · {row['warn']} warn · {row['ok']} ok"
    breaches = f" · {row['open_breaches']:,} open breaches" if row["open_breaches"] else ""
    reason = escape(str(row["reason"] or ""))
    sla = escape(data.label(row["sla"])) if row["health"] != "ok" else ""
    return (
        f'<div style="border:1px solid #d0d7de;border-left:8px solid {colour};border-radius:8px;'
        f'padding:10px 14px;margin-bottom:10px;min-height:128px;background:#fff">'
        f'<div style="display:flex;flex-wrap:wrap;gap:4px;justify-content:space-between;align-items:center">'
        f'<span style="font-size:1.25rem;font-weight:650">{escape(name)}</span>'
        f'<span style="background:{colour};color:#fff;border-radius:12px;padding:1px 10px;'
        f'font-size:0.8rem;font-weight:600;text-transform:uppercase">{escape(row["health"])}</span></div>'
        f'<div style="font-size:0.85rem;color:#57606a;margin-top:2px">{sla}</div>'
        f'<div style="font-size:0.92rem;margin-top:4px;line-height:1.3">{reason}</div>'
        f'<div style="font-size:0.75rem;color:#57606a;margin-top:6px">{counts}{breaches}</div></div>'
    )


def _hop_strip(channel: str, hops: pd.DataFrame) -> str:
    chips = []
    for _, hop in hops.sort_values("position").iterrows():
        colour = data.HEALTH_COLOUR.get(hop["health"], data.HEALTH_COLOUR["unknown"])
        detail = f"{int(hop['volume']):,} in · <b>backlog {int(hop['backlog']):,}</b>"
        if not pd.isna(hop["p95_ms"]):
            detail += f"<br>p95 {escape(data.human_duration(hop['p95_ms']))}"
        tip = escape(str(hop["reason"] or hop["health"]), quote=True)
        chips.append(
            f'<div title="{tip}" style="flex:1;min-width:120px;border:1px solid {colour};border-top:5px solid {colour};'
            f'border-radius:6px;padding:4px 8px;background:{colour}14">'
            f'<div style="font-weight:600;font-size:0.85rem">{escape(data.label(hop["hop"]))}</div>'
            f'<div style="font-size:0.72rem;color:#57606a;line-height:1.35">{detail}</div></div>'
        )
    arrow = '<div style="align-self:center;color:#8c959f;font-size:1.1rem">→</div>'
    return (
        f'<div style="display:flex;gap:6px;align-items:stretch;margin-bottom:8px">'
        f'<div style="width:90px;align-self:center;font-weight:650">{escape(channel)}</div>'
        + arrow.join(chips)
        + "</div>"
    )


@st.fragment(run_every=max(1.0, settings.refresh_seconds))
def live(window: str, channels: list[str], hours: int) -> None:
    status = data.cached(data.sla_status)(engine, window)
    if channels:
        status = status[status["channel"].isin(channels)]
    now = datetime.now(UTC)
    if not status.empty:
        as_of = pd.Timestamp(status["computed_at"].max())
        st.caption(
            f"SLAs as of {as_of.tz_convert('UTC'):%Y-%m-%d %H:%M:%S} UTC ({data.human_age(as_of, now)}) · "
            f"window {window} · refreshes every {data.human_duration(settings.refresh_seconds * 1000)}"
        )
    else:
        st.caption(f"No SLA values for window {window} yet: the metrics job writes them on its next run.")

    tiles = data.channel_tiles(status)
    per_row = len(tiles) if len(tiles) <= 5 else min(5, -(-len(tiles) // 2))
    for start in range(0, len(tiles), per_row):
        cols = st.columns(per_row)
        for col, (_, row) in zip(cols, tiles.iloc[start : start + per_row].iterrows(), strict=False):
            col.markdown(_tile(row), unsafe_allow_html=True)

    grid = data.health_grid(status)
    if not grid.empty:
        st.plotly_chart(charts.health_grid_figure(grid), width="stretch", key="health_grid")

    hops = data.cached(data.hop_health)(engine)
    if channels:
        hops = hops[hops["channel"].isin(channels)]
    if not hops.empty:
        st.subheader("Where is the delay?")
        order = {c: i for i, c in enumerate(tiles["channel"])}
        strips = [
            _hop_strip(channel, group)
            for channel, group in sorted(hops.groupby("channel"), key=lambda cg: (order.get(cg[0], 99), cg[0]))
        ]
        st.markdown("".join(strips), unsafe_allow_html=True)

    st.subheader("SLAs")
    table = data.sla_display(status)
    st.dataframe(
        data.style_health(table, "Health"),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * max(len(table), 1), 1200),
        column_config={"Reason": st.column_config.TextColumn(width="medium")},
        key="sla_table",
    )

    flow = data.cached(data.throughput)(engine, hours)
    if channels:
        flow = flow[flow["channel"].isin(channels)]
    left, right = st.columns(2)
    if flow.empty:
        left.info(f"No events in the last {hours} h.")
    else:
        left.plotly_chart(charts.throughput_figure(flow), width="stretch", key="throughput")
        right.plotly_chart(charts.error_rate_figure(flow), width="stretch", key="error_rate")

    left, right = st.columns(2)
    slas = data.cached(data.rollup_slas)(engine, 24)
    with left:
        choice = st.selectbox("Within target for", ["all SLAs", *slas], key="within_sla")
        sla = None if choice == "all SLAs" else choice
        within = data.cached(data.within_target)(engine, hours, sla)
        if channels:
            within = within[within["channel"].isin(channels)]
        if within.empty:
            st.info(f"No completed SLA items in the last {hours} h.")
        else:
            st.plotly_chart(charts.within_target_figure(within, sla=sla), width="stretch", key="within")
    with right:
        fresh = data.cached(data.freshness)(engine)
        if channels:
            fresh = fresh[fresh["channel"].isin(channels)]
        if fresh.empty:
            st.info("No inventory syncs recorded yet.")
        else:
            st.plotly_chart(charts.freshness_figure(fresh), width="stretch", key="freshness")


live(window, chosen, hours)
