"""Inventory: how fresh each channel's inventory feed is per location, and which feeds are stale."""

from __future__ import annotations

import streamlit as st

from app import cache, charts, shaping, widgets
from app.escaping import md
from controltower.vocab import human_duration

st.title("Inventory freshness")
widgets.require_data()

fresh = cache.freshness()
fresh = fresh[fresh["sla"] == "inventory_freshness"].reset_index(drop=True) if not fresh.empty else fresh
if fresh.empty:
    st.info("No inventory syncs recorded yet.")
    st.stop()

limits = shaping.freshness_limits(cache.sla_status("1h"))
stale = shaping.stale_feeds(fresh, limits)
oldest = fresh.loc[fresh["age_s"].idxmax()]
cols = st.columns(3)
cols[0].metric("Feeds (channel × location)", f"{len(fresh):,}", border=True)
cols[1].metric("Stale feeds", f"{len(stale):,}", border=True)
cols[2].metric("Max age", human_duration(float(oldest["age_s"]) * 1000), border=True,
               help=f"{md(oldest['channel'])} · {md(oldest['location'])}")
st.caption(f"Oldest: {md(oldest['channel'])} · {md(oldest['location'])}. Max age allowed per channel: "
           + ", ".join(f"{md(c)} {human_duration(v)}" for c, v in sorted(limits.items()))
           + (f" (others {human_duration(shaping.DEFAULT_MAX_AGE_MS)})." if limits else "")
           + " Stale cells are marked **!**.")

st.plotly_chart(charts.freshness_figure(fresh, limits), width="stretch", key="freshness")

st.subheader("Stale feeds")
if stale.empty:
    st.success("Every feed synced within its channel's max age.", icon=":material/check_circle:")
else:
    st.dataframe(stale, hide_index=True, width="stretch",
                 column_config={"Last sync": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")},
                 key="stale")
