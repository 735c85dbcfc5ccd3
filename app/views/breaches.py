"""Open breaches: the work queue of offending business transactions (alerts deep-link here).

`?sla=erp_posting&channel=walmart` pre-fills the filters; changing them updates the URL so the
view can be shared.
"""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from app import cache, shaping, widgets
from app.escaping import csv_bytes, md
from controltower.vocab import human_duration

st.title("Open breaches")
widgets.require_data()

slas, channels = (list(v) for v in cache.breach_filters())
wanted_sla, wanted_channel = widgets.param("sla"), widgets.param("channel")
for wanted, options in ((wanted_sla, slas), (wanted_channel, channels)):
    if wanted and wanted not in options:
        options.append(wanted)

# The URL pre-fills the filters once per visit; afterwards the widgets lead and the URL follows.
for name, wanted in (("sla", wanted_sla), ("channel", wanted_channel)):
    if name not in st.session_state:
        st.session_state[name] = wanted

left, right, _ = st.columns([2, 2, 3])
sla = left.selectbox("SLA", [None, *slas], key="sla", format_func=lambda v: "All SLAs" if v is None else v,
                     placeholder="All SLAs")
channel = right.selectbox(
    "Channel", [None, *channels], key="channel", format_func=lambda v: "All channels" if v is None else v,
    placeholder="All channels",
)
for name, value in (("sla", sla), ("channel", channel)):
    if value:
        st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]

items = cache.open_breaches(sla, channel)
scope = " · ".join(md(v) for v in (sla, channel) if v) or "all SLAs and channels"
if items.empty:
    st.success(f"No overdue items for {scope}.", icon=":material/check_circle:")
    st.stop()

shown = shaping.breaches_display(items)
total, channels_hit = cache.open_breach_totals(sla, channel)  # the list stops at its limit; these count all
total = max(total, len(shown))  # an item that fell due between the two reads
m1, m2, m3 = st.columns(3)
m1.metric("Overdue items", f"{total:,}")
m2.metric("Oldest overdue by", human_duration(items["overdue_ms"].max()))
m3.metric("Channels affected", f"{max(channels_hit, items['channel'].nunique())}")
joined = " (one row per business transaction; Members lists the correlation ids it joins)" if "Members" in shown else ""
listed = f"; the {len(shown):,} most overdue of {total:,} are listed" if total > len(shown) else ""
st.caption(f"Transactions past their SLA deadline for {scope}, most overdue first{joined}{listed}. "
           "Open one for its whole story.")
if "Note" in shown:
    unreadable = int((shown["Note"] != "").sum())
    st.warning(f"{unreadable:,} item{'' if unreadable == 1 else 's'} with an invalid date stored (outside the sane "
               "range): listed without ages; see the Note column.", icon=":material/event_busy:")

st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_config={
        "Transaction": st.column_config.LinkColumn("Open", display_text="Open →", width="small"),
        "Started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z"),
    },
    key="breaches_table",
)
stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{sla or 'all'}-{channel or 'all'}")
st.download_button(
    "Download CSV",
    csv_bytes(shown.drop(columns="Transaction")),
    icon=":material/download:",
    file_name=f"open-breaches-{safe_name}-{stamp}.csv",
    mime="text/csv",
    key="csv",
)
