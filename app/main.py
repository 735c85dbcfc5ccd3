"""Control Tower dashboard: the Streamlit entry point (`controltower dashboard` runs this file).

Sets up navigation and the sign-in gate, nothing else. Pages (app/views/) stay thin over
`app.cache` (data), `app.shaping` (tables, texts), `app.components` (HTML) and `app.charts`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import controltower
from app import access, widgets
from app.escaping import md

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Control Tower", page_icon=":material/flight_takeoff:", layout="wide")

pages = [
    st.Page(str(HERE / "views" / "health.py"), title="Channel health", icon=":material/traffic:", url_path="health", default=True),
    st.Page(str(HERE / "views" / "breaches.py"), title="Open breaches", icon=":material/alarm:", url_path="breaches"),
    st.Page(str(HERE / "views" / "channel.py"), title="Channel", icon=":material/storefront:", url_path="channel"),
    st.Page(str(HERE / "views" / "transaction.py"), title="Transaction", icon=":material/search:", url_path="transaction"),
    st.Page(str(HERE / "views" / "reconciliation.py"), title="Reconciliation", icon=":material/filter_alt:",
            url_path="reconciliation"),
    st.Page(str(HERE / "views" / "inventory.py"), title="Inventory", icon=":material/inventory_2:", url_path="inventory"),
    st.Page(str(HERE / "views" / "identity.py"), title="Identity", icon=":material/link_off:", url_path="identity"),
    st.Page(str(HERE / "views" / "alerts.py"), title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page(str(HERE / "views" / "incidents.py"), title="Incidents", icon=":material/crisis_alert:", url_path="incidents"),
    st.Page(str(HERE / "views" / "replay.py"), title="Replay", icon=":material/replay:", url_path="replay"),
    st.Page(str(HERE / "views" / "exceptions.py"), title="Exceptions", icon=":material/assignment_late:",
            url_path="exceptions"),
]


if widgets.sign_in_gate():
    st.stop()
page = st.navigation(pages)
with st.sidebar:
    st.markdown("**Control Tower**")
    st.caption(f"version {controltower.__version__}")
    me = widgets.user()
    if me.get("is_logged_in", False):
        st.caption(f"signed in as {md(access.signed_in_actor(me) or '?')}")
        st.button("Sign out", on_click=st.logout)
widgets.alerting_banner()
page.run()
