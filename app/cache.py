"""Every Streamlit cache of the dashboard, in one place: settings, the engine, and each query.

Views call these functions, never `app.queries` directly: a query runs at most once per refresh
interval (CONTROLTOWER_REFRESH_SECONDS) for all sessions, whatever the reruns. The clock is read
here (`now`), once per query run, and passed down; it is not part of any cache key.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from app import queries
from controltower import alertops, exceptionops
from controltower.context import AppContext
from controltower.masking import Masker
from controltower.maskrules import MaskingRules
from controltower.settings import ENV_PREFIX, Settings

F = TypeVar("F", bound=Callable[..., Any])


@st.cache_resource(show_spinner=False)
def _settings(env_key: tuple[tuple[str, str], ...]) -> Settings:
    return Settings.load()


def settings() -> Settings:
    """The settings from the environment (CONTROLTOWER_*), loaded once per distinct environment."""
    return _settings(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX))))


@st.cache_resource(show_spinner=False)
def _engine_for(_settings_obj: Settings, database_url: str | None, data_dir: str) -> Engine:
    return AppContext.open(_settings_obj, pool_size=3, application_name="controltower-dashboard").engine


def engine() -> Engine:
    s = settings()
    return _engine_for(s, s.database_url, str(s.data_dir))


def _now() -> datetime:
    return datetime.now(UTC)


def _cached(fn: F) -> F:
    """`fn` behind `st.cache_data` with the refresh interval as lifetime (read on first call, not at import)."""
    holder: dict[str, Any] = {}

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        if "f" not in holder:
            holder["f"] = st.cache_data(ttl=max(1.0, settings().refresh_seconds), show_spinner=False)(fn)
        return holder["f"](*args)

    return wrapper  # type: ignore[return-value]


@_cached
def database_state(database_url: str | None) -> str:
    return queries.database_state(engine())


@_cached
def sla_status(window: str) -> pd.DataFrame:
    return queries.sla_status(engine(), window)


@_cached
def hop_health() -> pd.DataFrame:
    return queries.hop_health(engine())


@_cached
def headline_counts() -> dict[str, int]:
    return queries.headline_counts(engine(), now=_now())


@_cached
def throughput(hours: float) -> pd.DataFrame:
    return queries.throughput(engine(), hours, now=_now())


@_cached
def within_target(hours: float, sla: str | None) -> pd.DataFrame:
    return queries.within_target(engine(), hours, sla, now=_now())


@_cached
def rollup_slas(hours: float) -> list[str]:
    return queries.rollup_slas(engine(), hours, now=_now())


@_cached
def channel_latency(channel: str, hours: float) -> pd.DataFrame:
    return queries.channel_latency(engine(), channel, hours, now=_now())


@_cached
def freshness() -> pd.DataFrame:
    return queries.freshness(engine(), now=_now())


@_cached
def known_channels() -> list[str]:
    return queries.known_channels(engine())


@_cached
def open_breaches(sla: str | None, channel: str | None) -> pd.DataFrame:
    return queries.open_breaches(engine(), sla, channel, now=_now())


def open_breach_totals(sla: str | None, channel: str | None) -> tuple[int, int]:
    return queries.open_breach_totals(engine(), sla, channel, now=_now())


@_cached
def breach_filters() -> tuple[list[str], list[str]]:
    return queries.breach_filters(engine())


@_cached
def funnel(channel: str, day: date) -> pd.DataFrame:
    return queries.funnel(engine(), channel, day)


@_cached
def funnel_gap(channel: str, day: date, a: str, b: str) -> pd.DataFrame:
    return queries.funnel_gap(engine(), channel, day, a, b)


@st.cache_data(ttl=15, show_spinner=False)
def alerting_health() -> dict[str, Any]:
    """Whether alerting runs (`controltower.alertops.evaluation_health`), re-read every 15 s: the
    banner that says on-call is not being paged must not lag a whole refresh interval."""
    return alertops.evaluation_health(engine(), _now())


@st.cache_resource(show_spinner=False)
def _masker_for(_settings_obj: Settings, rules: str | None) -> Masker:
    return Masker(MaskingRules.for_settings(_settings_obj))


def stored_identifier(text: str) -> str:
    """What the collectors stored for an identifier: an email in an order id is kept as a token."""
    s = settings()
    return _masker_for(s, str(s.masking_rules) if s.masking_rules else None).mask_identifier(text)


# Support and on-call act on what they see: these read fresh on every run.
SEARCH_SHOWN = 50  # search hits a page lists; one more is read to know whether more match


def search_transactions(q: str) -> list[dict[str, Any]]:
    return queries.search_transactions(engine(), stored_identifier(q), limit=SEARCH_SHOWN + 1)


def get_transaction(correlation_id: str) -> dict[str, Any] | None:
    return queries.get_transaction(engine(), stored_identifier(correlation_id), now=_now())


def related_alerts(channel: str) -> pd.DataFrame:
    return queries.related_alerts(engine(), channel)


def active_alerts() -> pd.DataFrame:
    return queries.active_alerts(engine())


def alert_history() -> pd.DataFrame:
    return queries.alert_history(engine(), now=_now())


def incidents(with_resolved: bool) -> pd.DataFrame:
    return queries.incidents(engine(), with_resolved=with_resolved)


def incident(incident_id: int) -> dict[str, Any] | None:
    return queries.incident(engine(), incident_id)


def silences() -> pd.DataFrame:
    return queries.silences(engine(), now=_now())


@_cached
def identity_orphans(system: str | None, channel: str | None) -> pd.DataFrame:
    return queries.identity_orphans(engine(), system, channel)


@_cached
def orphan_counts() -> pd.DataFrame:
    return queries.orphan_counts(engine())


@_cached
def duplicate_orders() -> pd.DataFrame:
    return queries.duplicate_orders(engine())


@_cached
def identity_hubs() -> pd.DataFrame:
    return queries.identity_hubs(engine())


@_cached
def identity_totals() -> dict[str, int]:
    return queries.identity_totals(engine())


def replay_config() -> Any:
    """The `replay:` section of the taps file (CONTROLTOWER_TAPS_FILE), or None when none is set."""
    from controltower.replayconfig import load_replay

    path = getattr(settings(), "taps_file", None)  # the setting arrives with the broker taps
    return load_replay(path) if path else None


def replay_requests() -> list[dict[str, Any]]:
    """Not cached: the page acts on them (approve, cancel) and must show the result at once."""
    from controltower import replayops

    return replayops.list_replays(engine(), replay_config())
# The exception work queue: people act on it, so it reads fresh on every run.
def exception_groups(state: str, channel: str | None, cls: str | None, assignee: str | None) -> pd.DataFrame:
    return queries.exception_groups(engine(), state, channel, cls, assignee)


def exception_group(group_id: int) -> dict[str, Any] | None:
    return queries.exception_group(engine(), group_id)


def exception_filters() -> dict[str, list[str]]:
    return exceptionops.filters(engine())


@_cached
def exception_stats() -> dict[str, pd.DataFrame]:
    return queries.exception_stats(engine(), now=_now())


def masker() -> Masker:
    s = settings()
    return _masker_for(s, str(s.masking_rules) if s.masking_rules else None)
