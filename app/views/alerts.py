"""Alerts: what is pending or firing, recent state changes, silences; acknowledge and silence.

Writes go through `data.acknowledge_alert` and `data.create_silence` (bound parameters) and
record who did them.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import data

engine = data.engine()

st.title("Alerts")
data.require_data(engine)

SEVERITY_HEALTH = {"critical": "critical", "page": "critical", "warning": "warn", "warn": "warn", "info": "ok"}
notice = st.session_state.pop("alerts_notice", None)
if notice:
    st.success(notice, icon=":material/check_circle:")

active = data.active_alerts(engine)
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
    def since(row: pd.Series) -> pd.Timestamp:
        return row["firing_since"] if row["state"] == "firing" and not pd.isna(row["firing_since"]) else row["active_since"]

    table = pd.DataFrame({
        "Severity": active["severity"],
        "State": active["state"],
        "Rule": active["rule"],
        "Since": pd.to_datetime(active.apply(since, axis=1), utc=True),
        "Value": active["last_value"].map(lambda v: "–" if pd.isna(v) else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}")),
        "Acknowledged": [
            "–" if pd.isna(by) else f"{by} at {pd.Timestamp(at):%H:%M}" for by, at in
            zip(active["acknowledged_by"], active["acknowledged_at"], strict=True)
        ],
        "Summary": active["summary"].fillna(""),
        "Labels": active["labels"].map(data.labels_text),
    })

    def colour(value: str) -> str:
        return f"color: {data.HEALTH_COLOUR[SEVERITY_HEALTH.get(value, 'unknown')]}; font-weight: 600"

    st.dataframe(
        table.style.map(colour, subset=["Severity"]),
        hide_index=True,
        width="stretch",
        column_config={"Since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
                       "Summary": st.column_config.TextColumn(width="medium")},
        key="active_alerts",
    )

    st.subheader("Act on an alert")
    who = st.text_input("Your name", key="who", placeholder="Required: recorded with the action").strip()
    def short(labels: dict[str, str] | None) -> str:
        return " / ".join(str(v) for k, v in sorted((labels or {}).items()) if k not in ("alertname", "severity"))

    names = {r["fingerprint"]: f"{r['state']} · {r['severity']} · {r['rule']} · {short(r['labels'])}"
             for _, r in active.iterrows()}
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
                elif data.acknowledge_alert(engine, ack_pick, who):
                    st.session_state["alerts_notice"] = f"Acknowledged {names[ack_pick]} as {who}."
                    st.rerun()
                else:
                    st.warning("That alert is gone.")
    with right, st.container(border=True):
        st.markdown("**Silence** (matching alerts change state but do not notify)")
        silence_pick = st.selectbox("Alert", list(active["fingerprint"]), format_func=names.get, key="silence_pick")
        labels = active.set_index("fingerprint").at[silence_pick, "labels"] or {}
        st.caption("Matchers: " + (data.labels_text(labels) or "–"))
        duration = st.selectbox("For", ["1h", "2h", "4h", "8h", "24h", "72h"], index=1, key="silence_duration")
        comment = st.text_input("Comment", key="silence_comment", placeholder="Why (e.g. ERP maintenance window)")
        if st.button("Create silence", key="silence", icon=":material/notifications_off:"):
            if not who:
                st.error("Enter your name first.")
            else:
                sid = data.create_silence(engine, {str(k): str(v) for k, v in labels.items()}, duration,
                                          created_by=who, comment=comment)
                st.session_state["alerts_notice"] = f"Silence #{sid} created for {duration} by {who}."
                st.rerun()

st.subheader("Silences")
sil = data.silences(engine)
if sil.empty:
    st.caption("No active or recent silences.")
else:
    now = pd.Timestamp.now(tz="UTC")
    st.dataframe(
        pd.DataFrame({
            "Id": sil["id"],
            "Active": ["yes" if pd.Timestamp(s) <= now < pd.Timestamp(e) else "no"
                       for s, e in zip(sil["starts_at"], sil["ends_at"], strict=True)],
            "Matchers": sil["matchers"].map(data.labels_text),
            "Starts": pd.to_datetime(sil["starts_at"], utc=True),
            "Ends": pd.to_datetime(sil["ends_at"], utc=True),
            "Created by": sil["created_by"],
            "Comment": sil["comment"],
        }),
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z") for c in ("Starts", "Ends")},
        key="silences",
    )

st.subheader("Recent history (24 h)")
history = data.alert_history(engine)
if history.empty:
    st.caption("No alert changed state in the last 24 hours.")
else:
    st.dataframe(
        pd.DataFrame({
            "At": pd.to_datetime(history["at"], utc=True),
            "Rule": history["rule"],
            "Change": history["from_state"] + " → " + history["to_state"],
            "Labels": history["labels"].map(data.labels_text),
            "Value": history["value"].map(lambda v: "–" if pd.isna(v) else f"{v:g}"),
            "Summary": history["summary"].fillna(""),
        }),
        hide_index=True,
        width="stretch",
        column_config={"At": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z")},
        key="alert_history",
    )
