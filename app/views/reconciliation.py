"""Reconciliation: per channel and day, how far the day's orders got, and which ones are stuck.

The funnel counts distinct orders whose `order.received` was that day (UTC) by the milestones
they reached; choosing a gap lists the orders that reached one stage but not the next.
`?channel=walmart&day=2026-11-22` pre-fills the filters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import streamlit as st

from app import cache, charts, links, widgets
from app.escaping import md

st.title("Reconciliation")
widgets.require_data()

channels = widgets.channel_choices()
today = datetime.now(UTC).date()
EARLIEST = date(2000, 1, 1)
if "day" not in st.session_state:
    try:  # a deep link's day, kept inside what the picker can show
        st.session_state["day"] = min(max(date.fromisoformat(widgets.param("day") or ""), EARLIEST), today)
    except (ValueError, TypeError):
        st.session_state["day"] = today

left, mid, _ = st.columns([2, 2, 3])
channel = left.selectbox("Channel", channels, key="channel")
day = mid.date_input("Orders received on (UTC)", key="day", min_value=EARLIEST, max_value=today)
st.query_params["channel"] = channel
st.query_params["day"] = day.isoformat()

stages = cache.funnel(channel, day)
received = int(stages["orders"].iloc[0])
if received == 0:
    st.info(f"No {md(channel)} orders were received on {day:%d %b %Y}.")
    st.stop()

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(charts.funnel_figure(stages, title=f"{channel} · orders received {day:%d %b %Y}"),
                    width="stretch", key="funnel")
with right:
    pairs = list(zip(stages["stage"][:-1], stages["stage"][1:], strict=True))
    counts = dict(zip(stages["stage"], stages["orders"], strict=True))
    gaps = {f"{a} → {b}": (a, b, int(counts[a]) - int(counts[b])) for a, b in pairs}
    default = next((i for i, (_, _, n) in enumerate(gaps.values()) if n > 0), 0)
    choice = st.selectbox(
        "Gap", list(gaps), index=default, key="gap",
        format_func=lambda k: f"{k.replace('_', ' ')} ({gaps[k][2]:,} order{'' if gaps[k][2] == 1 else 's'})",
    )
    a, b, missing = gaps[choice]
    st.metric(f"Reached {a.replace('_', ' ')}, not {b.replace('_', ' ')}", f"{missing:,}", border=True)
    st.caption("Counts are distinct orders; a stage can be skipped, so a later stage may hold orders an earlier "
               "one does not.")

stuck = cache.funnel_gap(channel, day, a, b)
if stuck.empty:
    st.success(f"Every order that reached {a.replace('_', ' ')} also reached {b.replace('_', ' ')}.",
               icon=":material/check_circle:")
    st.stop()
st.subheader(f"Orders stuck between {a.replace('_', ' ')} and {b.replace('_', ' ')}")
st.dataframe(
    pd.DataFrame({
        "Transaction": [links.tx_link(c) for c in stuck["correlation_id"]],
        "Correlation id": stuck["correlation_id"],
        "Order id": stuck["order_id"].fillna(""),
        "External order id": stuck["external_order_id"].fillna(""),
        f"Reached {a.replace('_', ' ')}": pd.to_datetime(stuck["reached_at"], utc=True),
        "Last milestone": stuck["last_milestone"].fillna(""),
        "Status": stuck["status"].fillna(""),
    }),
    hide_index=True,
    width="stretch",
    column_config={
        "Transaction": st.column_config.LinkColumn("Open", display_text="Open →", width="small"),
        f"Reached {a.replace('_', ' ')}": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
    },
    key="gap_orders",
)
