"""Streamlit pieces several pages share: the data guard, channel pickers, who is signed in.

The only module besides the views and app/main.py that calls Streamlit elements. Data comes
through app/cache.py; the rules (who may sign in, who is the actor) come from app/access.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import streamlit as st

from app import access, cache, links, shaping
from app.escaping import md

EMPTY_MESSAGE = "No data yet: start the simulator with `controltower simulate` (or send events to the collector)."


def require_data() -> None:
    """Stop the page with a friendly message when the database is unreachable, unmigrated or empty."""
    try:
        state = cache.database_state(cache.settings().database_url)
    except sa.exc.OperationalError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig and str(exc.orig).strip() else type(exc).__name__
        st.error(
            "**The database is unreachable**, so the dashboard has nothing to show right now. "
            "Check that PostgreSQL is running and that `CONTROLTOWER_DATABASE_URL` points at it; "
            f"this page retries on reload.\n\nDetail: {md(detail)}",
            icon=":material/cloud_off:",
        )
        st.stop()
    if state == "unmigrated":
        st.warning("The database has no Control Tower tables yet: run `controltower migrate`.")
        st.stop()
    if state == "empty":
        st.info(EMPTY_MESSAGE, icon="🛰️")
        st.stop()


def param(name: str) -> str | None:
    """A query parameter's value (cleaned by `links.clean`), or None when absent or empty."""
    return links.first(st.query_params, name)


def channel_choices() -> list[str]:
    """Known channels for a page's channel picker, with `?channel=` (a deep link) preselected;
    stops the page with the empty-state message when there are none."""
    channels = list(cache.known_channels())
    wanted = param("channel")
    if wanted and wanted not in channels:
        channels.append(wanted)
    if not channels:
        st.info(EMPTY_MESSAGE)
        st.stop()
    st.session_state.setdefault("channel", wanted or channels[0])
    return channels


def alerting_banner() -> None:
    """On every page: an error banner when alerting has stopped, a warning when some rules fail.

    Only once the database holds data (`database_state` is `ready`): a fresh demo before the
    scheduler's first tick, or an empty or unreachable database, has nothing to page about, and
    the page itself says why it is empty. Rule names and errors are shown as text."""
    try:
        if cache.database_state(cache.settings().database_url) != "ready":
            return
        health = cache.alerting_health()
    except sa.exc.SQLAlchemyError:  # the page's own data guard reports an unreachable database
        return
    now = datetime.now(UTC)
    stopped = shaping.alerting_banner(health, now)
    if stopped:
        st.error(md(stopped), icon=":material/notifications_off:")
    failing = shaping.failing_rules_text(health)
    if failing:
        st.warning(md(failing), icon=":material/rule:")


# -- sign-in ----------------------------------------------------------------------------------------
def auth_configured() -> bool:
    """An `[auth]` section in .streamlit/secrets.toml (Streamlit's OIDC login) is configured."""
    try:
        return "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all
        return False


def user() -> dict[str, Any]:
    """The signed-in user's claims (`is_logged_in`, `email`, …); without sign-in, not logged in."""
    return dict(st.user.to_dict())


def sign_in_gate() -> bool:
    """With sign-in configured, show the sign-in page to anonymous visitors and a refusal page to
    people outside the allow-list; True when the page must stop there."""
    if not auth_configured():
        return False
    me = user()
    if not me.get("is_logged_in", False):
        st.title("Control Tower")
        st.write("Sign in to see channel health, orders and alerts.")
        st.button("Sign in", on_click=st.login, type="primary")
        return True
    s = cache.settings()
    if not access.may_sign_in(me, domains=s.dashboard_allowed_domains, groups=s.dashboard_allowed_groups):
        st.title("Control Tower")
        st.error(f"{md(access.signed_in_actor(me) or 'This account')} is not allowed to use this dashboard. "
                 "Ask an administrator to add your email domain or group.", icon=":material/block:")
        st.button("Sign out", on_click=st.logout)
        return True
    return False


def actor_input() -> str | None:
    """Who is acting on an alert: the signed-in identity, or (without sign-in) a typed name."""
    if auth_configured():
        who = access.actor(user(), auth_configured=True)
        st.caption(f"Acting as {md(who or 'unknown')} (signed in).")
        return who
    typed = st.text_input("Your name", key="who", placeholder="Required: recorded with the action")
    return access.actor({}, auth_configured=False, typed=typed)

