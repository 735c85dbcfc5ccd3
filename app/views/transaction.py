"""Transaction: support's search by order id, marketplace order number, SKU or tracking number.

`?q=<key>` pre-fills the search; `?id=<correlation_id>` opens the business transaction that
correlation id belongs to (the old `?correlation_id=` still works). A business transaction joined
from several systems' correlation ids is one page: its story names each system and the ID it
used, and its members are listed. Every value from events is shown as text, never as Markdown.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import cache, charts, components, links, shaping, story, widgets
from app.escaping import md

st.title("Transaction")
widgets.require_data()

opened = links.tx_param(st.query_params)
searched = widgets.param(links.SEARCH_PARAM)
if "q" not in st.session_state:
    st.session_state["q"] = searched or opened or ""
q = links.clean(st.text_input(
    "Search", key="q", placeholder="Order id, marketplace order number, SKU, tracking number or correlation id"
)).strip()

if not q:
    st.caption("Type any key of an order to see its whole story across systems.")
    st.stop()
if q not in (searched, opened):
    st.query_params.clear()
    st.query_params[links.SEARCH_PARAM] = q

if opened and q == opened and not searched:
    chosen = opened  # a deep link: exactly this correlation id, never a search
else:
    results = cache.search_transactions(q)
    if not results:
        st.warning(f"No transaction has a key equal to {components.quoted(q)}.")
        st.stop()
    if len(results) == 1:
        chosen = results[0]["correlation_id"]
    else:
        if len(results) > cache.SEARCH_SHOWN:
            results = results[:cache.SEARCH_SHOWN]
            st.caption(f"More than {cache.SEARCH_SHOWN} transactions match {components.quoted(q)}; "
                       f"the newest {cache.SEARCH_SHOWN} are shown.")
        else:
            st.caption(f"{len(results)} transactions match {components.quoted(q)}, newest first.")
        st.dataframe(shaping.search_display(results), hide_index=True, width="stretch")
        choices = {r["correlation_id"]: f"{r['correlation_id']} · {r.get('channel') or '–'} · "
                   f"{r.get('order_id') or '–'} · {r['status']}" for r in results}
        chosen = st.selectbox("Show", list(choices), format_func=choices.get, key="pick")

tx = cache.get_transaction(chosen)
if tx is None:
    st.warning(f"No transaction has the correlation id {components.quoted(chosen)} (retention?).")
    st.stop()

st.info(md(story.transaction_story(tx)), icon=":material/support_agent:")
first = min(tx["milestones"].values(), default=tx["first_event_at"])
st.caption(f"What happened, in words you can read to the customer (times in UTC; "
           f"received {pd.Timestamp(first):%d %b %Y}).")
st.markdown(components.transaction_header(tx), unsafe_allow_html=True)
members = shaping.members_frame(tx)
if len(members) > 1:
    st.markdown(f"**{len(tx['correlation_ids'])} correlation ids joined into this business transaction** "
                "(linked by shared identity keys)")
    st.dataframe(
        members,
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss") for c in ("First event",
                                                                                                   "Last event")},
        key="members",
    )
    if len(members) < len(tx["correlation_ids"]):  # the core describes at most MAX_MEMBERS one by one
        st.caption(f"The first {len(members):,} of {len(tx['correlation_ids']):,} correlation ids are listed, "
                   "earliest first.")
alerts = cache.related_alerts(tx["channel"]) if tx["channel"] else pd.DataFrame()
if not alerts.empty:
    st.markdown(f"**Firing alerts for {md(tx['channel'])}** ([all alerts](alerts))")
    st.dataframe(
        pd.DataFrame({
            "Severity": alerts["severity"],
            "Rule": alerts["rule"],
            "Summary": alerts["summary"].fillna(""),
            "Firing since": pd.to_datetime(alerts["firing_since"], utc=True),
            "Acknowledged by": alerts["acknowledged_by"].fillna("–"),
        }),
        hide_index=True,
        width="stretch",
        column_config={"Firing since": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")},
        key="related_alerts",
    )
error = shaping.last_error_text(tx)
if error:
    if tx["status"] in ("error", "dead_letter"):
        st.error(md(error), icon=":material/error:")
    else:
        st.warning(f"{md(error)} (recovered: status is now {md(tx['status'])})", icon=":material/history:")
if tx["keys"]:
    st.markdown(components.keys_line(tx["keys"]), unsafe_allow_html=True)

left, right = st.columns([1, 1])
with left:
    st.markdown("**Milestones**")
    st.dataframe(
        shaping.milestones_frame(tx),
        hide_index=True,
        width="stretch",
        column_config={"Reached at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
        key="milestones",
    )
with right:
    st.markdown("**SLA verdicts**")
    verdicts = shaping.verdicts_frame(tx)
    if verdicts.empty:
        st.caption("No SLA applies yet (definitions are written by the metrics job).")
    else:
        st.dataframe(components.style_health(verdicts, "State"), hide_index=True, width="stretch", key="verdicts")

events = shaping.events_frame(tx)
st.plotly_chart(charts.timeline_figure(events), width="stretch", key="timeline")

st.markdown("**Events**")
st.dataframe(
    components.style_health(events.drop(columns=["source"] if len(members) > 1 else ["source", "correlation_id"]),
                            "status"),
    hide_index=True,
    width="stretch",
    column_config={"time": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss.SSS")},
    key="events",
)
if len(tx["events"]) < (tx.get("event_count") or 0):  # the core loads a bounded number, earliest first
    st.caption(f"The earliest {len(tx['events']):,} of the {tx['event_count']:,} events this transaction counted "
               "are shown.")
for event in tx["events"][:100]:
    member = f" · {event['correlation_id']}" if len(tx.get("correlation_ids") or ()) > 1 else ""
    title = (f"{event['occurred_at']} · {event.get('system') or '?'} · {event['flow']}.{event['stage']} · "
             f"{event['status']}{member}")
    with st.expander(md(title)):
        st.json({k: event.get(k) for k in ("attributes", "payload", "error_code", "error_message", "trace_id",
                                            "span_id", "source", "received_at") if event.get(k) is not None})
if len(tx["events"]) > 100:
    st.caption(f"Payloads of the first 100 of {len(tx['events'])} events shown.")
