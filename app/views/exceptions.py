"""Exceptions: the work queue of failure groups; one group with its occurrences and audit trail;
assign, comment, tag, snooze, resolve, reopen; the counts (volume per channel and day, time to resolve).

Filters come from the URL first (`?state=&channel=&class=&assignee=`), `?id=N` opens one group.
Every action goes through `controltower.exceptionops` (row lock, audit row in the same
transaction), as from the CLI and the API, with the signed-in identity (or a typed name when no
sign-in is configured). Values from sources are shown as text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from app import cache, charts, links, widgets
from app.escaping import md
from controltower import exceptionops
from controltower.errors import ControlTowerError
from controltower.vocab import human_duration

TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")
STATES = ["active", "open", "snoozed", "resolved", "all"]

st.title("Exceptions")
widgets.require_data()

notice = st.session_state.pop("exceptions_notice", None)
if notice:
    st.success(notice, icon=":material/check_circle:")


def _act(who: str, fn, *args, message: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Do `fn` as `who` (the signed-in or named person), then say `message`; a refusal is a warning."""
    if not who:
        st.error("Enter your name first.")
        return
    try:
        fn(cache.engine(), *args, **kwargs)
    except ControlTowerError as exc:
        st.warning(md(exc))
    else:
        st.session_state["exceptions_notice"] = message
        st.rerun()


raw_id = widgets.param("id") or ""
if raw_id and not (raw_id.isascii() and raw_id.isdigit()):  # "²".isdigit() and int("²") fails
    st.warning(f"No exception group {md(raw_id[:40])}.")
    raw_id = ""

if raw_id:
    group_id = int(raw_id)
    one = cache.exception_group(group_id)
    if one is None:
        st.warning(f"No exception group {md(raw_id)}.")
        st.stop()
    st.subheader(f"#{group_id} · {md(one['sample_message'] or one['message'])}")
    cols = st.columns(4)
    cols[0].metric("State", one["state"], border=True)
    cols[1].metric("Class", one["class"], border=True)
    cols[2].metric("Open occurrences", f"{one['open_count']:,}", border=True)
    cols[3].metric("All occurrences", f"{one['occurrence_count']:,}", border=True)
    facts = [f"channel {md(one['channel'])}", f"milestone {md(one['milestone'])}"]
    if one["error_code"]:
        facts.append(f"error code {md(one['error_code'])}")
    if one["assignee"]:
        facts.append(f"assigned to {md(one['assignee'])}")
    if one["tags"]:
        facts.append("tags " + md(", ".join(one["tags"])))
    if one["snoozed_until"]:
        facts.append(f"snoozed until {md(one['snoozed_until'].astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC'))}")
    if one["resolved_at"]:
        facts.append(f"resolved ({md(one['resolution'])}) by {md(one['resolved_by'])}")
    st.caption(" · ".join(facts))

    with st.container(border=True):
        st.markdown("**Act on this group**")
        who = widgets.actor_input()
        now = datetime.now(UTC)
        a, b, c = st.columns(3)
        assignee = a.text_input("Assign to", value=one["assignee"] or "", key="exc_assignee")
        if a.button("Assign", key="exc_assign", icon=":material/person_add:"):
            _act(who, exceptionops.assign, group_id, assignee, who, now, via="dashboard",
                 message=f"#{group_id} assigned to {md(assignee or 'nobody')} by {md(who)}.")
        tags = b.text_input("Tags (comma-separated; -tag removes)", key="exc_tags")
        if b.button("Tag", key="exc_tag", icon=":material/sell:"):
            parts = [t.strip() for t in tags.split(",") if t.strip()]
            _act(who, exceptionops.tag, group_id, who, now, add=[t for t in parts if not t.startswith("-")],
                 remove=[t[1:] for t in parts if t.startswith("-")], via="dashboard", message=f"#{group_id} tagged.")
        hours = c.selectbox("Snooze for", [1, 4, 8, 24, 72], index=1, format_func=lambda h: f"{h} h", key="exc_snooze_h")
        if c.button("Snooze", key="exc_snooze", icon=":material/snooze:"):
            _act(who, exceptionops.snooze, group_id, now + timedelta(hours=hours), who, now, via="dashboard",
                 message=f"#{group_id} snoozed for {hours} h.")
        text = st.text_area("Comment or resolution note", key="exc_text")
        d, e, f = st.columns(3)
        if d.button("Comment", key="exc_comment", icon=":material/comment:"):
            _act(who, exceptionops.comment, group_id, text, who, now, masker=cache.masker(), via="dashboard",
                 message=f"Comment added to #{group_id}.")
        if one["state"] != "resolved" and e.button("Resolve", key="exc_resolve", icon=":material/done_all:"):
            _act(who, exceptionops.resolve, group_id, text, who, now, masker=cache.masker(), via="dashboard",
                 message=f"#{group_id} resolved by {md(who)}.")
        if one["state"] != "open" and f.button("Reopen", key="exc_reopen", icon=":material/undo:"):
            _act(who, exceptionops.reopen, group_id, who, now, via="dashboard", message=f"#{group_id} reopened.")

    if one["state"] != "resolved":
        st.page_link("views/replay.py", label="Replay this group (dry run first, guarded)", icon=":material/replay:",
                     query_params={"group": str(group_id)})
    st.subheader("Occurrences")
    occ = pd.DataFrame(one["occurrences"])
    if occ.empty:
        st.caption("No occurrences.")
    else:
        st.dataframe(pd.DataFrame({
            "Transaction": [links.tx_link(c) for c in occ["correlation_id"]],
            "Correlation id": occ["correlation_id"], "Source": occ["source"], "At": occ["at"],
            "Count": occ["count"], "Awaits": [", ".join(a) for a in occ["awaits"]],
            "Message": occ["message"].fillna(""), "Resolved": occ["resolved_at"],
        }), hide_index=True, width="stretch", column_config={
            "Transaction": st.column_config.LinkColumn("Open", display_text="Open →", width="small"),
            "At": TIME, "Resolved": TIME}, key="exc_occurrences")
    st.subheader("Audit trail")
    acts = pd.DataFrame(one["actions"])
    if acts.empty:
        st.caption("Nothing done yet.")
    else:
        st.dataframe(pd.DataFrame({
            "At": acts["at"], "Who": acts["actor"], "Action": acts["action"], "Via": acts["via"],
            "Detail": [", ".join(f"{k}: {v}" for k, v in d.items()) for d in acts["detail"]],
        }), hide_index=True, width="stretch", column_config={"At": TIME}, key="exc_actions")
    st.stop()

# --- the work queue ----------------------------------------------------------------------------
found = cache.exception_filters()
wanted = {name: widgets.param(name) for name in ("state", "channel", "class", "assignee")}
for name, value in wanted.items():
    if f"exc_f_{name}" not in st.session_state:
        st.session_state[f"exc_f_{name}"] = value if name != "state" else (value if value in STATES else "active")
options = {"channel": found["channel"], "class": found["class"], "assignee": ["-", *found["assignee"]]}
for name, value in wanted.items():
    if name in options and value and value not in options[name]:
        options[name].append(value)
c1, c2, c3, c4 = st.columns(4)
state = c1.selectbox("State", STATES, key="exc_f_state")
chosen = {"state": state}
for col, name, label in ((c2, "channel", "Channel"), (c3, "class", "Class"), (c4, "assignee", "Assignee")):
    chosen[name] = col.selectbox(label, [None, *options[name]], key=f"exc_f_{name}",
                                 format_func=lambda v: "All" if v is None else ("unassigned" if v == "-" else v))
for name, value in chosen.items():
    if value and not (name == "state" and value == "active"):
        st.query_params[name] = value
    elif name in st.query_params:
        del st.query_params[name]

groups = cache.exception_groups(state, chosen["channel"], chosen["class"], chosen["assignee"])
if groups.empty:
    st.success("No exception group matches.", icon=":material/check_circle:")
else:
    m1, m2, m3 = st.columns(3)
    m1.metric("Groups", f"{len(groups):,}", border=True)
    m2.metric("Open occurrences", f"{int(groups['open_count'].sum()):,}", border=True)
    m3.metric("Unassigned", f"{int(groups['assignee'].isna().sum()):,}", border=True)
    st.dataframe(pd.DataFrame({
        "Group": [links.page_link("exceptions", id=i) for i in groups["id"]], "Id": groups["id"],
        "State": groups["state"], "Class": groups["class"], "Channel": groups["channel"],
        "Milestone": groups["milestone"], "Open": groups["open_count"], "Total": groups["occurrence_count"],
        "Last seen": groups["last_seen_at"], "Assignee": groups["assignee"].fillna(""),
        "Message": groups["sample_message"].fillna(groups["message"]),
    }), hide_index=True, width="stretch", column_config={
        "Group": st.column_config.LinkColumn("Open", display_text="Open →", width="small"), "Last seen": TIME},
        key="exc_groups")

st.subheader("Counts (last 14 days)")
counts = cache.exception_stats()
if counts["volume"].empty:
    st.caption("No exceptions in the last 14 days.")
else:
    st.plotly_chart(charts.exception_volume_figure(counts["volume"]), key="exc_volume")
ttr = counts["time_to_resolve"]
if not ttr.empty:
    st.dataframe(pd.DataFrame({
        "Channel": ttr["channel"], "Resolved": ttr["resolved"], "By a person": ttr["manual"],
        "Automatically": ttr["resolved"] - ttr["manual"],
        "Time to resolve p50": [human_duration(v) for v in ttr["p50_ms"]],
        "Time to resolve p90": [human_duration(v) for v in ttr["p90_ms"]],
    }), hide_index=True, width="stretch", key="exc_ttr")
