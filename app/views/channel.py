"""Channel: one channel's SLAs over time, throughput, error budgets and open breaches.

`?channel=walmart` selects the channel; changing the selector updates the URL.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import cache, charts, components, shaping, widgets
from app.escaping import md
from controltower.vocab import HEALTH_RANK, label, worst

st.title("Channel")
widgets.require_data()

channels = widgets.channel_choices()

left, right, _ = st.columns([2, 1, 3])
channel = left.selectbox("Channel", channels, key="channel")
hours = right.selectbox("Last", [1, 3, 6, 12, 24], index=2, key="hours", format_func=lambda h: f"{h} h")
if st.query_params.get("channel") != channel:
    st.query_params["channel"] = channel

status = cache.sla_status("1h")
mine = status[status["channel"] == channel]
day = cache.sla_status("24h")
both = pd.concat([mine, day[day["channel"] == channel]])

if not mine.empty:
    health = worst(mine["health"], empty="unknown")
    worst_row = mine.assign(rank=mine["health"].map(HEALTH_RANK)).sort_values("rank", ascending=False).iloc[0]
    reason = worst_row["reason"] if isinstance(worst_row["reason"], str) and worst_row["reason"] else "All SLAs within target"
    st.markdown(components.health_banner(health, reason), unsafe_allow_html=True)

# Error budget and burn rates per SLA (1 h and 24 h windows).
budgets = both[both["error_budget_remaining"].notna() | both["burn_rate_short"].notna()]
if not budgets.empty:
    st.subheader("Error budget and burn rate")
    one_hour = budgets[budgets["window"] == "1h"].sort_values("sla")
    cols = st.columns(max(1, min(4, len(one_hour))))
    for col, (_, row) in zip(cols * 4, one_hour.iterrows(), strict=False):
        budget = row["error_budget_remaining"]
        col.metric(
            f"{md(label(row['sla']))}: budget left",
            "–" if pd.isna(budget) else f"{budget * 100:.0f} %",
            delta=None if pd.isna(row["burn_rate_short"]) else f"burn {row['burn_rate_short']:.1f}× short / "
            f"{0 if pd.isna(row['burn_rate_long']) else row['burn_rate_long']:.1f}× long",
            delta_color="inverse" if (not pd.isna(row["burn_rate_short"]) and row["burn_rate_short"] > 1) else "off",
            border=True,
        )
    st.dataframe(components.style_health(shaping.budget_display(budgets), "Health"), hide_index=True, width="stretch",
                 key="budgets")

# Latency per SLA from the merged minute histograms, with the target.
st.subheader("Latency")
latency = cache.channel_latency(channel, hours)
targets = {r["sla"]: r["target_ms"] for _, r in mine.iterrows() if not pd.isna(r["target_ms"])}
if latency.empty:
    st.info(f"No completed SLA items for {md(channel)} in the last {hours} h.")
else:
    slas = sorted(set(latency["sla"]))
    cols = st.columns(2)
    for i, sla in enumerate(slas):
        with cols[i % 2]:
            st.plotly_chart(charts.latency_figure(latency[latency["sla"] == sla], sla=sla, target_ms=targets.get(sla)),
                            width="stretch", key=f"latency_{sla}")

flow = cache.throughput(hours)
flow = flow[flow["channel"] == channel]
if flow.empty:
    st.info(f"No events from {md(channel)} in the last {hours} h.")
else:
    st.plotly_chart(charts.channel_flow_figure(flow, channel=channel), width="stretch", key="flow")

st.subheader("Open breaches")
items = cache.open_breaches(None, channel)
if items.empty:
    st.success(f"No overdue items for {md(channel)}.", icon=":material/check_circle:")
else:
    shown = shaping.breaches_display(items)
    st.caption(f"{len(shown):,} transactions past their SLA deadline, most overdue first.")
    st.dataframe(
        shown.drop(columns=["Channel"]),
        hide_index=True,
        width="stretch",
        column_config={
            "Transaction": st.column_config.LinkColumn("Open", display_text="Open →", width="small"),
            "Started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z"),
        },
        key="channel_breaches",
    )
