"""Channel: one channel's SLAs over time, throughput, error budgets and open breaches.

`?channel=walmart` selects the channel; changing the selector updates the URL.
"""

from __future__ import annotations

from html import escape

import pandas as pd
import streamlit as st

from app import charts, data

engine = data.engine()

st.title("Channel")
data.require_data(engine)

channels = data.channel_choices(engine)

left, right, _ = st.columns([2, 1, 3])
channel = left.selectbox("Channel", channels, key="channel")
hours = right.selectbox("Last", [1, 3, 6, 12, 24], index=2, key="hours", format_func=lambda h: f"{h} h")
if st.query_params.get("channel") != channel:
    st.query_params["channel"] = channel

status = data.cached(data.sla_status)(engine, "1h")
mine = status[status["channel"] == channel]
both = pd.concat([mine, data.cached(data.sla_status)(engine, "24h").query("channel == @channel")])

if not mine.empty:
    health = data.worst(mine["health"])
    symbol = data.HEALTH_SYMBOL.get(health, "?")
    colour = data.HEALTH_COLOUR.get(health, data.HEALTH_COLOUR["unknown"])
    worst_row = mine.assign(rank=mine["health"].map(data.HEALTH_RANK)).sort_values("rank", ascending=False).iloc[0]
    reason = worst_row["reason"] if isinstance(worst_row["reason"], str) and worst_row["reason"] else "All SLAs within target"
    st.markdown(
        f'<div style="border:1px solid #d0d7de;border-left:8px solid {colour};border-radius:8px;padding:8px 14px;'
        f'margin-bottom:8px"><b style="color:{colour}">{symbol} {escape(health.upper())}</b> · {escape(reason)}</div>',
        unsafe_allow_html=True,
    )

# Error budget and burn rates per SLA (1 h and 24 h windows).
budgets = both[both["error_budget_remaining"].notna() | both["burn_rate_short"].notna()]
if not budgets.empty:
    st.subheader("Error budget and burn rate")
    one_hour = budgets[budgets["window"] == "1h"].sort_values("sla")
    cols = st.columns(max(1, min(4, len(one_hour))))
    for col, (_, row) in zip(cols * 4, one_hour.iterrows(), strict=False):
        budget = row["error_budget_remaining"]
        col.metric(
            f"{data.label(row['sla'])}: budget left",
            "–" if pd.isna(budget) else f"{budget * 100:.0f} %",
            delta=None if pd.isna(row["burn_rate_short"]) else f"burn {row['burn_rate_short']:.1f}× short / "
            f"{0 if pd.isna(row['burn_rate_long']) else row['burn_rate_long']:.1f}× long",
            delta_color="inverse" if (not pd.isna(row["burn_rate_short"]) and row["burn_rate_short"] > 1) else "off",
            border=True,
        )
    st.dataframe(data.style_health(data.budget_display(budgets), "Health"), hide_index=True, width="stretch",
                 key="budgets")

# Latency per SLA from the merged minute histograms, with the target.
st.subheader("Latency")
latency = data.cached(data.channel_latency)(engine, channel, hours)
targets = {r["sla"]: r["target_ms"] for _, r in mine.iterrows() if not pd.isna(r["target_ms"])}
if latency.empty:
    st.info(f"No completed SLA items for {channel} in the last {hours} h.")
else:
    slas = sorted(set(latency["sla"]))
    cols = st.columns(2)
    for i, sla in enumerate(slas):
        with cols[i % 2]:
            st.plotly_chart(charts.latency_figure(latency[latency["sla"] == sla], sla=sla, target_ms=targets.get(sla)),
                            width="stretch", key=f"latency_{sla}")

flow = data.cached(data.throughput)(engine, hours)
flow = flow[flow["channel"] == channel]
if flow.empty:
    st.info(f"No events from {channel} in the last {hours} h.")
else:
    st.plotly_chart(charts.channel_flow_figure(flow, channel=channel), width="stretch", key="flow")

st.subheader("Open breaches")
items = data.cached(data.open_breaches)(engine, None, channel)
if items.empty:
    st.success(f"No overdue items for {channel}.", icon=":material/check_circle:")
else:
    shown = data.breaches_display(items)
    shown["Transaction"] = [data.tx_link(c) for c in items["correlation_id"]]
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
