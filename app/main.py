"""Control Tower dashboard: the Streamlit entry point (`controltower dashboard` runs this file).

Pages stay thin over `app.data` (queries, formatting) and `app.charts` (figures).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import controltower

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
    st.Page(str(HERE / "views" / "alerts.py"), title="Alerts", icon=":material/notifications:", url_path="alerts"),
]


def _login_required() -> bool:
    """With an `[auth]` section in .streamlit/secrets.toml (Streamlit's OIDC login), every page
    needs a signed-in user; without one, protect the dashboard with a reverse proxy (README)."""
    try:
        configured = "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all
        configured = False
    if not configured or st.user.get("is_logged_in", False):
        return False
    st.title("Control Tower")
    st.write("Sign in to see channel health, orders and alerts.")
    st.button("Sign in", on_click=st.login, type="primary")
    return True


if _login_required():
    st.stop()
page = st.navigation(pages)
with st.sidebar:
    st.markdown("**Control Tower**")
    st.caption(f"version {controltower.__version__}")
    if st.user.get("is_logged_in", False):
        st.caption(f"signed in as {st.user.get('email') or st.user.get('name')}")
        st.button("Sign out", on_click=st.logout)
page.run()
