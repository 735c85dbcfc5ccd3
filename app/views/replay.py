"""Replay: requests (pending, approved, sent), approve and cancel as the signed-in identity, a dry run.

Every action goes through `controltower.replayops` (the guards: duplicate, second-person
approval, pacing), as from the CLI; the executor in the collectors sends. A dry run for a
correlation id (`?correlation_id=`) or an exception group (`?group=`) shows what would be sent
(target, headers, the masked body) and the verdicts, and records nothing. Values from sources
are shown as data (tables, JSON), never as Markdown.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from app import cache, widgets
from app.escaping import md
from controltower import replayops
from controltower.errors import ControlTowerError

st.title("Replay")
notice = st.session_state.pop("replay_notice", None)
if notice:
    st.success(notice, icon=":material/check_circle:")

rows = cache.replay_requests()
columns = ["id", "created_at", "requested_by", "flow", "correlation_id", "target", "status", "approved_by",
           "sent_at", "produced_at", "outcome"]
table = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
st.subheader("Requests")
if table.empty:
    st.caption("No replay requested yet.")
else:
    st.dataframe(table.rename(columns={"produced_at": "produced (after replay)"}), hide_index=True, width="stretch")

who = widgets.actor_input()
waiting = [r for r in rows if r["status"] == "requested"]
pending = [r for r in rows if r["status"] in replayops.PENDING]
left, right = st.columns(2)
with left, st.container(border=True):
    st.markdown("**Approve** (money-moving flows: a second person)")
    if not waiting:
        st.caption("Nothing waits for approval.")
    else:
        pick = st.selectbox("Request", [r["id"] for r in waiting], key="approve_pick",
                            format_func=lambda i: next(f"{i}: {r['flow']} {r['correlation_id']} by {r['requested_by']}"
                                                       for r in waiting if r["id"] == i))
        if st.button("Approve", key="approve", icon=":material/done:"):
            if not who:
                st.error("Enter your name first.")
            else:
                try:
                    replayops.approve_replay(cache.engine(), int(pick), who, datetime.now(UTC))
                except ControlTowerError as exc:
                    st.warning(md(exc))
                else:
                    st.session_state["replay_notice"] = f"Replay {pick} approved by {md(who)}."
                    st.rerun()
with right, st.container(border=True):
    st.markdown("**Cancel** (what is not sent yet)")
    if not pending:
        st.caption("Nothing pending.")
    else:
        cancel_pick = st.selectbox("Request", [r["id"] for r in pending], key="cancel_pick")
        if st.button("Cancel", key="cancel", icon=":material/block:"):
            if not who:
                st.error("Enter your name first.")
            else:
                try:
                    replayops.cancel_replay(cache.engine(), request_id=int(cancel_pick), by=who, now=datetime.now(UTC))
                except ControlTowerError as exc:
                    st.warning(md(exc))
                else:
                    st.session_state["replay_notice"] = f"Replay {cancel_pick} cancelled by {md(who)}."
                    st.rerun()

st.subheader("Dry run, then request")
config = cache.replay_config()
if config is None:
    st.info("No replay configured: set CONTROLTOWER_TAPS_FILE to a taps.yaml with a replay: section.")
    st.stop()
params = st.query_params
cid = st.text_input("Correlation id", value=params.get("correlation_id", ""), key="preview_cid")
group_text = st.text_input("or exception group id", value=params.get("group", ""), key="preview_group")
confirm = st.checkbox("Replay even if the transaction already reached the milestone (duplicate)", key="confirm_dup")
group = int(group_text) if group_text.strip().isdigit() else None
if cid.strip() or group is not None:
    try:
        plan = replayops.request_replay(cache.engine(), config=config, correlation_ids=[cid] if cid.strip() else [],
                                        group_id=group, by=who or "preview", now=datetime.now(UTC), dry_run=True,
                                        confirm_duplicate=confirm)
    except ControlTowerError as exc:
        st.warning(md(exc))
    else:
        st.dataframe(pd.DataFrame([{"correlation_id": i.correlation_id, "flow": i.flow, "target": i.target,
                                    "verdict": i.status, "reason": i.reason} for i in plan.items]),
                     hide_index=True, width="stretch")
        for item in plan.accepted:
            st.json({"correlation_id": item.correlation_id, **item.preview}, expanded=False)
        if plan.accepted and st.button("Request replay", key="request", icon=":material/replay:"):
            if not who:
                st.error("Enter your name first.")
            else:
                done = replayops.request_replay(
                    cache.engine(), config=config, correlation_ids=[cid] if cid.strip() else [], group_id=group,
                    by=who, now=datetime.now(UTC), confirm_duplicate=confirm)
                st.session_state["replay_notice"] = (f"{len(done.accepted)} replay(s) requested by {md(who)}, "
                                                     f"{len(done.refused)} refused (batch {done.batch}).")
                st.rerun()
