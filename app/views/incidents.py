"""Incidents: alerts grouped by their likely cause; one incident's alerts and timeline; acknowledge.

The list (open, acknowledged, and with `?state=all` resolved) links to one incident (`?id=N`):
its title, cause, impact, its alerts (each with the deep link to its offending transactions)
and its timeline. Acknowledging goes through `controltower.alertops.acknowledge_incident` (as
from the CLI and the API) with the signed-in identity, or a typed name without sign-in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import streamlit as st

from app import cache, widgets
from app.escaping import md
from controltower import alertops
from controltower.errors import ControlTowerError

INCIDENT_ID = re.compile(r"[0-9]{1,18}")
TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")

st.title("Incidents")
widgets.require_data()

notice = st.session_state.pop("incidents_notice", None)
if notice:
    st.success(notice, icon=":material/check_circle:")

raw_id = st.query_params.get("id", "")
if raw_id and not INCIDENT_ID.fullmatch(raw_id):  # ASCII digits that fit a bigint (not "²", not 10**20)
    st.warning(f"No incident {md(raw_id[:40])}.")
    raw_id = ""

if raw_id:
    one = cache.incident(int(raw_id))
    if one is None:
        st.warning(f"No incident {md(raw_id)}.")
        st.stop()
    st.subheader(md(one["title"]))
    impact = one["impact"] or {}
    cols = st.columns(4)
    cols[0].metric("State", one["state"], border=True)
    cols[1].metric("Alerts", f"{len(one['alerts']):,}", border=True)
    cols[2].metric("Orders at risk", f"{int(impact.get('orders_at_risk') or 0):,}", border=True)
    value = impact.get("order_value_at_risk")
    cols[3].metric("Value at risk", f"{value:,.2f}" if value is not None else "–", border=True)
    st.caption(f"Opened {md(one['opened_at'].astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC'))}"
               + (f" · likely cause: {md(one['cause'])}" if one["cause"] else "")
               + (f" · acknowledged by {md(one['acknowledged_by'])}" if one["acknowledged_by"] else ""))
    if one["state"] == "open":
        with st.container(border=True):
            st.markdown("**Acknowledge** (someone is on it: no more repeats; its alerts are acknowledged too)")
            who = widgets.actor_input()
            if st.button("Acknowledge incident", key="incident_ack", icon=":material/done:"):
                if not who:
                    st.error("Enter your name first.")
                else:
                    try:
                        alertops.acknowledge_incident(cache.engine(), int(raw_id), who, datetime.now(UTC), via="dashboard")
                    except ControlTowerError as exc:
                        st.warning(md(exc))
                    else:
                        st.session_state["incidents_notice"] = f"Acknowledged incident {raw_id} as {md(who)}."
                        st.rerun()
    st.markdown("**Alerts**")
    st.dataframe(one["alerts_table"], hide_index=True, width="stretch", key="incident_alerts",
                 column_config={"Attached": TIME, "Transactions": st.column_config.LinkColumn(display_text="open")})
    st.markdown("**Timeline**")
    st.dataframe(one["timeline_table"], hide_index=True, width="stretch", key="incident_timeline",
                 column_config={"At": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z")})
    st.page_link("views/incidents.py", label="All incidents", icon=":material/arrow_back:")
    st.stop()

with_resolved = st.toggle("Show resolved", value=st.query_params.get("state") == "all", key="incidents_all")
table = cache.incidents(with_resolved)
if table.empty:
    st.success("No open incident.", icon=":material/check_circle:")
else:
    st.dataframe(table, hide_index=True, width="stretch", key="incidents",
                 column_config={"Since": TIME, "Title": st.column_config.TextColumn(width="large"),
                                "Open": st.column_config.LinkColumn(display_text="details")})
