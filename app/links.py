"""Deep links between dashboard pages and the query parameters they carry.

One name per concept: `id` opens one transaction by correlation id (`correlation_id` is still
accepted so old links keep working), `q` searches by any key. Every value is URL-encoded, so a
correlation id such as `x&id=other#` opens exactly that transaction. Pure; no Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

MAX_PARAM = 1024  # no key or name is longer; a longer value cannot match anything
TX_PARAM = "id"
TX_ALIASES = ("correlation_id",)
SEARCH_PARAM = "q"


def page_link(page: str, **params: Any) -> str:
    """`page?name=value&…`, every value encoded; None values are left out."""
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return f"{page}?{query}" if query else page


def tx_link(correlation_id: str) -> str:
    """The transaction page opened on exactly `correlation_id`."""
    return page_link("transaction", **{TX_PARAM: correlation_id})


def breaches_link(sla: str | None = None, channel: str | None = None) -> str:
    return page_link("breaches", sla=sla, channel=channel)


def clean(value: Any) -> str:
    """A value from a URL or a search box as the database can compare it: no NUL (PostgreSQL
    text cannot hold one), at most MAX_PARAM characters."""
    return str(value).replace("\x00", "")[:MAX_PARAM]


def first(params: Mapping[str, Any], *names: str) -> str | None:
    """The first non-empty value among `names` in `params` (Streamlit's query params or a dict), cleaned."""
    for name in names:
        value = params.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value and clean(value):
            return clean(value)
    return None


def tx_param(params: Mapping[str, Any]) -> str | None:
    """The correlation id a link asks for, under the current name or an old alias."""
    return first(params, TX_PARAM, *TX_ALIASES)
