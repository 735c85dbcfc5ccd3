"""Inventory: how fresh each channel's inventory feed is per location, and which feeds are stale."""

from __future__ import annotations

import streamlit as st

from app import charts, data

engine = data.engine()

st.title("Inventory freshness")
data.require_data(engine)

fresh = data.cached(data.freshness)(engine)
fresh = fresh[fresh["sla"] == "inventory_freshness"].reset_index(drop=True) if not fresh.empty else fresh
if fresh.empty:
    st.info("No inventory syncs recorded yet.")
    st.stop()

limits = data.freshness_limits(data.cached(data.sla_status)(engine, "1h"))
stale = data.stale_feeds(fresh, limits)
oldest = fresh.loc[fresh["age_s"].idxmax()]
cols = st.columns(3)
cols[0].metric("Feeds (channel × location)", f"{len(fresh):,}", border=True)
cols[1].metric("Stale feeds", f"{len(stale):,}", border=True)
cols[2].metric("Max age", data.human_duration(float(oldest["age_s"]) * 1000), border=True,
               help=f"{oldest['channel']} · {oldest['location']}")
st.caption(f"Oldest: {oldest['channel']} · {oldest['location']}. Max age allowed per channel: "
           + ", ".join(f"{c} {data.human_duration(v)}" for c, v in sorted(limits.items()))
           + (f" (others {data.human_duration(data.DEFAULT_MAX_AGE_MS)})." if limits else "")
           + " Stale cells are marked **!**.")

st.plotly_chart(charts.freshness_figure(fresh, limits), width="stretch", key="freshness")

st.subheader("Stale feeds")
if stale.empty:
    st.success("Every feed synced within its channel's max age.", icon=":material/check_circle:")
else:
    st.dataframe(stale, hide_index=True, width="stretch",
                 column_config={"Last sync": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")},
                 key="stale")
