"""Channel health (default page): which channel is red, and at which hop the delay sits.

Watched all day, so it is light for the browser: cards and grids are plain HTML (st.html, not
Markdown), the time series inline SVG (app/svgcharts.py), no chart library to load; the headline
and the rest refresh as two fragments.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from app import cache, components, shaping, svgcharts, widgets
from app.escaping import md
from controltower.vocab import human_duration

settings = cache.settings()

st.title("Channel health")
widgets.require_data()


@st.fragment(run_every=max(1.0, settings.refresh_seconds))
def headline() -> None:
    counts = cache.headline_counts()
    cols = st.columns(4)
    cols[0].metric("Orders received (last hour)", f"{counts['orders_last_hour']:,}", border=True)
    cols[1].metric("Open breaches", f"{counts['open_breaches']:,}", border=True,
                   help="Open SLA items past their deadline (see Open breaches)")
    cols[2].metric("Firing alerts", f"{counts['firing_alerts']:,}", border=True)
    cols[3].metric("Dead letters (last hour)", f"{counts['dead_letters_last_hour']:,}", border=True)


headline()

controls = st.columns([1.2, 3, 1.2])
window = controls[0].segmented_control("SLA window", ["1h", "24h"], default="1h", key="window") or "1h"
known_channels = sorted(set(cache.sla_status(window)["channel"]) - {"*"})
chosen = controls[1].multiselect("Channels", known_channels, key="channels", placeholder="All channels")
hours = controls[2].selectbox("Charts: last", [1, 3, 6, 12, 24], index=2, key="hours", format_func=lambda h: f"{h} h")


def mine(frame: pd.DataFrame, channels: list[str]) -> pd.DataFrame:
    return frame[frame["channel"].isin(channels)] if channels and not frame.empty else frame


@st.fragment(run_every=max(1.0, settings.refresh_seconds))
def live(window: str, channels: list[str], hours: int) -> None:
    status = mine(cache.sla_status(window), channels)
    if status.empty:
        st.caption(f"No SLA values for window {md(window)} yet: the metrics job writes them on its next run.")
    else:
        as_of = pd.Timestamp(status["computed_at"].max())
        st.caption(
            f"SLAs as of {as_of.tz_convert('UTC'):%Y-%m-%d %H:%M:%S} UTC "
            f"({shaping.human_age(as_of, datetime.now(UTC))}) · window {md(window)} · "
            f"refreshes every {human_duration(settings.refresh_seconds * 1000)}"
        )

    tiles = shaping.channel_tiles(status)
    st.html(components.tiles_row(tiles.to_dict("records")))

    grid = shaping.health_grid(status)
    if not grid.empty:
        st.html(components.health_grid(grid))

    hops = mine(cache.hop_health(), channels)
    if not hops.empty:
        st.subheader("Where is the delay?")
        order = {c: i for i, c in enumerate(tiles["channel"])}
        strips = [components.hop_strip(channel, group)
                  for channel, group in sorted(hops.groupby("channel"), key=lambda cg: (order.get(cg[0], 99), cg[0]))]
        st.html("".join(strips))

    st.subheader("SLAs")
    table = shaping.sla_display(status)
    st.dataframe(
        components.style_health(table, "Health"),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * max(len(table), 1), 1200),
        column_config={"Reason": st.column_config.TextColumn(width="medium")},
        key="sla_table",
    )

    flow = mine(cache.throughput(hours), channels)  # the charts are SVG in Markdown: st.html strips SVG
    left, right = st.columns(2)
    if flow.empty:
        left.info(f"No events in the last {hours} h.")
    else:
        left.markdown(svgcharts.throughput_chart(flow), unsafe_allow_html=True)
        right.markdown(svgcharts.error_rate_chart(flow), unsafe_allow_html=True)

    left, right = st.columns(2)
    with left:
        choice = st.selectbox("Within target for", ["all SLAs", *cache.rollup_slas(24)], key="within_sla")
        sla = None if choice == "all SLAs" else choice
        within = mine(cache.within_target(hours, sla), channels)
        if within.empty:
            st.info(f"No completed SLA items in the last {hours} h.")
        else:
            st.markdown(svgcharts.within_target_chart(within, sla=sla), unsafe_allow_html=True)
    with right:
        fresh = mine(cache.freshness(), channels)
        if fresh.empty:
            st.info("No inventory syncs recorded yet.")
        else:
            limits = shaping.freshness_limits(cache.sla_status("1h"))
            st.html(components.freshness_grid(fresh, limits))


live(window, chosen, hours)
