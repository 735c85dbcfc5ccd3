"""Identity: what the joining of correlation IDs into business transactions left over.

Orphans (business transactions whose identity keys link to no channel order or return once the
grace period has passed: a carrier scan for an unknown tracking number, an ERP posting for an
order no channel sent) per system and channel, with their keys; duplicate orders (one channel
order, two or more ERP documents); hubs (identity values on too many correlation IDs to link).
`?system=carrier&channel=unknown` pre-fills the orphan filters.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from app import cache, charts, links, shaping, widgets
from app.escaping import csv_bytes, md

st.title("Identity")
widgets.require_data()
now = datetime.now(UTC)

counts = cache.orphan_counts()
duplicates = cache.duplicate_orders()
hubs = cache.identity_hubs()
totals = cache.identity_totals()  # the lists stop at 500; the figures count them all

m1, m2, m3 = st.columns(3)
m1.metric("Orphans", f"{int(counts['orphans'].sum()) if not counts.empty else 0:,}", border=True,
          help="Business transactions with an identity key that reached no order.received or return.requested "
               "(the SLA definitions' origins) within the grace period")
m2.metric("Duplicate orders", f"{totals['duplicates']:,}", border=True,
          help="Channel orders posted to the ERP as two or more documents")
m3.metric("Hubs", f"{totals['hubs']:,}", border=True,
          help="Identity values on more correlation IDs than the fan-out limit: they link none of them")

st.subheader("Orphans")
if counts.empty:
    st.success("No orphans: every business transaction with an identity key has its order or return.",
               icon=":material/check_circle:")
else:
    st.plotly_chart(charts.orphans_figure(counts), width="stretch", key="orphans_chart")
    systems, channels = sorted(counts["system"].unique()), sorted(counts["channel"].unique())
    for name, options in (("system", systems), ("channel", channels)):
        wanted = widgets.param(name)
        if wanted and wanted not in options:
            options.append(wanted)
        st.session_state.setdefault(name, wanted)
    left, right, _ = st.columns([2, 2, 3])
    system = left.selectbox("System", [None, *systems], key="system", placeholder="All systems",
                            format_func=lambda v: "All systems" if v is None else v)
    channel = right.selectbox("Channel", [None, *channels], key="channel", placeholder="All channels",
                              format_func=lambda v: "All channels" if v is None else v)
    for name, value in (("system", system), ("channel", channel)):
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]
    orphans = cache.identity_orphans(system, channel)
    scope = " · ".join(md(v) for v in (system, channel) if v) or "every system and channel"
    if orphans.empty:
        st.info(f"No orphans for {scope}.")
    else:
        st.caption(f"Orphans for {scope}, newest first (at most 500). Open one for its whole story.")
        shown = pd.DataFrame({
            "Transaction": [links.tx_link(c) for c in orphans["correlation_id"]],
            "Correlation id": orphans["correlation_id"],
            "System": orphans["system"],
            "Channel": orphans["channel"],
            "Age": [shaping.human_age(t, now) for t in orphans["first_event_at"]],
            "First event": pd.to_datetime(orphans["first_event_at"], utc=True),
            "Milestones": orphans["milestones"].fillna(""),
            "Keys": orphans["keys"].fillna(""),
            "Members": orphans["member_ids"],
        })
        st.dataframe(
            shown, hide_index=True, width="stretch", key="orphans_table",
            column_config={
                "Transaction": st.column_config.LinkColumn("Open", display_text="Open →", width="small"),
                "First event": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
            },
        )
        st.download_button("Download orphans (CSV)", csv_bytes(shown.drop(columns="Transaction")),
                           icon=":material/download:", file_name=f"orphans-{now:%Y%m%dT%H%M%SZ}.csv",
                           mime="text/csv", key="orphans_csv")

st.subheader("Duplicate orders")
if duplicates.empty:
    st.success("No duplicate orders: no channel order carries two ERP documents.", icon=":material/check_circle:")
else:
    st.caption("One channel order, two or more ERP documents: it may ship or bill twice. Newest first (at most 500).")
    st.dataframe(
        pd.DataFrame({
            "Transaction": [links.tx_link(c) for c in duplicates["correlation_id"]],
            "Correlation id": duplicates["correlation_id"],
            "Channel": duplicates["channel"],
            "Order id": duplicates["order_id"].fillna(""),
            "Received": pd.to_datetime(duplicates["received_at"], utc=True),
            "ERP documents": duplicates["erp_documents"],
            "Members": duplicates["member_ids"],
        }),
        hide_index=True, width="stretch", key="duplicates_table",
        column_config={
            "Transaction": st.column_config.LinkColumn("Open", display_text="Open →", width="small"),
            "Received": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
        },
    )

st.subheader("Hubs")
if hubs.empty:
    st.success("No hubs: every identity value is on few enough correlation IDs to link them.",
               icon=":material/check_circle:")
else:
    st.caption("Identity values seen on more correlation IDs than the fan-out limit (a default, a test value, a "
               "batch id): they link none of them. Widest first (at most 500).")
    st.dataframe(
        pd.DataFrame({
            "Kind": hubs["kind"], "Value": hubs["value"], "Fan-out": hubs["fanout"].astype(int),
            "First seen": pd.to_datetime(hubs["first_seen_at"], utc=True),
            "Last seen": pd.to_datetime(hubs["last_seen_at"], utc=True),
        }),
        hide_index=True, width="stretch", key="hubs_table",
        column_config={
            "First seen": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
            "Last seen": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
        },
    )
