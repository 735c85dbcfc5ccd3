"""Alerts: what is pending or firing, recent state changes, silences; acknowledge and silence.

Acknowledge and silence go through `controltower.alertops` (row lock, state check, alert_events
and alert_audit in the same transaction), as from the CLI and the API. The actor recorded is the
signed-in identity, or a typed name when no sign-in is configured.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from app import cache, components, shaping, widgets
from app.escaping import md
from controltower import alertops
from controltower.errors import ControlTowerError
from controltower.settings import parse_duration

st.title("Alerts")
widgets.require_data()
st.caption(md(shaping.evaluation_line(cache.alerting_health(), datetime.now(UTC))), help=(
    "The scheduler refreshes the SLA table, evaluates the rules and sends the notifications in one pass "
    "per interval (and again when a pending alert reaches its `for`)."))

notice = st.session_state.pop("alerts_notice", None)
if notice:
    st.success(notice, icon=":material/check_circle:")

active = cache.active_alerts()
firing = active[active["state"] == "firing"] if not active.empty else active
cols = st.columns(3)
cols[0].metric("Firing", f"{len(firing):,}", border=True)
cols[1].metric("Pending", f"{len(active) - len(firing):,}", border=True)
cols[2].metric("Unacknowledged firing", f"{int(firing['acknowledged_by'].isna().sum()) if not firing.empty else 0:,}",
               border=True)

st.subheader("Pending and firing")
if active.empty:
    st.success("No alert is pending or firing.", icon=":material/check_circle:")
else:
    st.dataframe(
        components.style_severity(shaping.alerts_display(active), "Severity", shaping.SEVERITY_HEALTH),
        hide_index=True,
        width="stretch",
        column_config={"Since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
                       "Summary": st.column_config.TextColumn(width="medium")},
        key="active_alerts",
    )

    st.subheader("Act on an alert")
    who = widgets.actor_input()
    names = {r["fingerprint"]: shaping.alert_choice(r) for _, r in active.iterrows()}
    left, right = st.columns(2)
    with left, st.container(border=True):
        st.markdown("**Acknowledge** (a firing alert: someone is on it)")
        if firing.empty:
            st.caption("No firing alert to acknowledge.")
        else:
            ack_pick = st.selectbox("Alert", list(firing["fingerprint"]), format_func=names.get, key="ack_pick")
            if st.button("Acknowledge", key="ack", icon=":material/done:"):
                if not who:
                    st.error("Enter your name first.")
                else:
                    try:
                        alertops.acknowledge(cache.engine(), ack_pick, who, datetime.now(UTC), via="dashboard")
                    except ControlTowerError as exc:
                        st.warning(md(exc))
                    else:
                        st.session_state["alerts_notice"] = f"Acknowledged {md(names[ack_pick])} as {md(who)}."
                        st.rerun()
    with right, st.container(border=True):
        st.markdown("**Silence** (matching alerts change state but do not notify)")
        silence_pick = st.selectbox("Alert", list(active["fingerprint"]), format_func=names.get, key="silence_pick")
        labels = active.set_index("fingerprint").at[silence_pick, "labels"] or {}
        st.caption("Matchers: " + (md(shaping.labels_text(labels)) or "–"))
        duration = st.selectbox("For", ["1h", "2h", "4h", "8h", "24h", "72h"], index=1, key="silence_duration")
        comment = st.text_input("Comment", key="silence_comment", placeholder="Why (e.g. ERP maintenance window)")
        if st.button("Create silence", key="silence", icon=":material/notifications_off:"):
            if not who:
                st.error("Enter your name first.")
            else:
                now = datetime.now(UTC)
                ends = now + timedelta(seconds=parse_duration(duration))
                try:
                    sid = alertops.add_silence(cache.engine(), {str(k): str(v) for k, v in labels.items()},
                                               starts_at=now, ends_at=ends, created_by=who,
                                               comment=comment.strip(), via="dashboard")
                except ControlTowerError as exc:
                    st.warning(md(exc))
                else:
                    st.session_state["alerts_notice"] = f"Silence #{sid} created for {duration} by {md(who)}."
                    st.rerun()

st.subheader("Silences")
sil = cache.silences()
if sil.empty:
    st.caption("No active or recent silences.")
else:
    st.dataframe(
        shaping.silences_display(sil, datetime.now(UTC)),
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z") for c in ("Starts", "Ends")},
        key="silences",
    )

st.subheader("Recent history (24 h)")
history = cache.alert_history()
if history.empty:
    st.caption("No alert changed state in the last 24 hours.")
else:
    st.dataframe(
        shaping.history_display(history),
        hide_index=True,
        width="stretch",
        column_config={"At": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z")},
        key="alert_history",
    )
