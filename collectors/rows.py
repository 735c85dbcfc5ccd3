"""Index rows derived from stored events, and the per-process memory of rows already committed.

`milestone_rows` and `key_rows` turn the events a batch really inserted into the rows of
`transaction_milestones` and `transaction_keys` (earliest time wins); `SeenCache` remembers
what this process committed so the next batch can skip rows that cannot change anything.
Pure and thread-safe; no SQL here (the store writes these rows).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from controltower.event import Event
from controltower.identity import identity_values, key_text, refusal

MAX_KEY_LEN = 256
CACHE_LIMIT = 100_000  # per cache and process: ~25 MB; skips rows a recent batch already wrote


class SeenCache:
    """What this process already committed: key → earliest value. Lets a batch skip milestone and
    key rows that cannot change anything (a later time than the stored one).

    Shared by the collector's worker threads: readers take one `dict.get` per key (no separate
    membership test that a concurrent clear could invalidate), writers swap or update under a
    lock. A value remembered too high only costs a redundant upsert; never too low, because only
    committed rows are remembered."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self._data: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def fresh(self, rows: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], Any]:
        get = self._data.get
        out = {}
        for key, value in rows.items():
            seen = get(key)
            if seen is None or value < seen:
                out[key] = value
        return out

    def remember(self, rows: dict[tuple[str, ...], Any]) -> None:
        with self._lock:
            data = self._data
            if len(data) + len(rows) > self.limit:
                data = self._data = {}  # a new dict: readers holding the old one stay consistent
            for key, value in rows.items():
                seen = data.get(key)
                if seen is None or value < seen:
                    data[key] = value

    def clear(self) -> None:
        with self._lock:
            self._data = {}


def milestone_rows(events: Sequence[Event]) -> dict[tuple[str, ...], tuple[datetime, str]]:
    """(correlation_id, milestone) → earliest (reached_at, channel) over successful events."""
    out: dict[tuple[str, ...], tuple[datetime, str]] = {}
    for e in events:
        if e.status != "ok":
            continue
        key = (e.correlation_id, e.flow + "." + e.stage)
        value = (e.occurred_at, e.channel or "")  # "" (stored as NULL) sorts before any channel
        seen = out.get(key)
        if seen is None or value < seen:
            out[key] = value
    return out


def key_rows(
    events: Sequence[Event], kinds: tuple[str, ...], linking: frozenset[str] = frozenset()
) -> dict[tuple[str, ...], datetime]:
    """(value, kind, correlation_id) → first time seen, for the order id and every key attribute.
    A float under an identity kind (`linking`) is no key row: it cannot link (malformed), and its
    stored text could not be told from a string's when relink reads the keys back (two 22-digit
    tracking numbers sent as JSON numbers round to the same float)."""
    out: dict[tuple[str, ...], datetime] = {}

    def add(value: Any, kind: str, e: Event) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return
        if isinstance(value, float) and kind in linking:
            return
        try:
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # an integer past 64 bits: not a key anyone searches for
            return
        if not text or len(text) > MAX_KEY_LEN:
            return
        key = (text, kind, e.correlation_id)
        seen = out.get(key)
        if seen is None or e.occurred_at < seen:
            out[key] = e.occurred_at

    # `attributes.order_id` links like the field (identity_rows, and validation lets it stand in
    # for the channel): it must be a key row too, or it would be accepted and never link
    every = (*kinds, "order_id") if "order_id" in linking and "order_id" not in kinds else kinds
    for e in events:
        if e.order_id:
            add(e.order_id, "order_id", e)
        attrs = e.attributes
        if not attrs:
            continue
        for kind in every:
            value = attrs.get(kind)
            if value is None:
                continue
            if isinstance(value, list):
                for item in value:
                    add(item, kind, e)
            else:
                add(value, kind, e)
    return out


def index_rows(
    events: Sequence[Event], kinds: tuple[str, ...], linking: frozenset[str]
) -> tuple[dict[tuple[str, ...], datetime], set[tuple[str, str, str]], Counter[str]]:
    """`key_rows(events, kinds, linking)` and `identity_rows(events, linking)` in one pass over
    each event's attributes (the write path's hot loop: an event carries a few attributes, the
    configuration a dozen kinds, so it walks the attributes and looks each name up)."""
    keyed = frozenset(kinds) | ({"order_id"} if "order_id" in linking else frozenset())
    wanted = keyed | linking
    order_keyed = True  # the order id field is always a key row (kind "order_id")
    order_links = "order_id" in linking
    keys: dict[tuple[str, ...], datetime] = {}
    links: set[tuple[str, str, str]] = set()
    refused: Counter[str] = Counter()
    get = keys.get

    def add(value: Any, kind: str, cid: str, at: datetime, as_key: bool, as_link: bool) -> None:
        if as_link:
            why = refusal(value)
            if why is None:
                links.add((key_text(value), kind, cid))  # type: ignore[arg-type]
            else:
                refused[why] += 1
        if not as_key:
            return
        if isinstance(value, str):
            text = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return
            if isinstance(value, float) and kind in linking:
                return
            try:
                text = orjson.dumps(value).decode()
            except orjson.JSONEncodeError:
                return
        if not text or len(text) > MAX_KEY_LEN:
            return
        key = (text, kind, cid)
        seen = get(key)
        if seen is None or at < seen:
            keys[key] = at

    for e in events:
        cid, at = e.correlation_id, e.occurred_at
        if e.order_id is not None:
            # key_rows skips an empty order id; identity_rows refuses it as a placeholder
            add(e.order_id, "order_id", cid, at, order_keyed and bool(e.order_id), order_links)
        attrs = e.attributes
        if not attrs:
            continue
        for kind, value in attrs.items():
            if kind not in wanted or value is None:
                continue
            as_key, as_link = kind in keyed, kind in linking
            if type(value) is list:
                for item in value:
                    add(item, kind, cid, at, as_key, as_link)
            else:
                add(value, kind, cid, at, as_key, as_link)
    return keys, links, refused


def identity_rows(
    events: Sequence[Event], kinds: frozenset[str]
) -> tuple[set[tuple[str, str, str]], Counter[str]]:
    """The (value, kind, correlation_id) key rows that may link business transactions, and how
    many identity values could not (by reason: placeholder, too_long, malformed)."""
    links: set[tuple[str, str, str]] = set()
    refused: Counter[str] = Counter()

    for e in events:
        for kind, value in identity_values(e.order_id, e.attributes, kinds):
            why = refusal(value)
            if why is None:
                links.add((key_text(value), kind, e.correlation_id))  # type: ignore[arg-type]
            else:
                refused[why] += 1
    return links, refused
