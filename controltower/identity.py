"""What joins correlation IDs into business transactions, said once for ingest, relink and readers.

A business transaction is a connected component of correlation IDs, linked by sharing a value
of the same *identity key* kind (`order_id`, `erp_document`, `tracking_number`, ...). A value
links only when it is linkable (`refusal` is None: not a placeholder, at most 128 characters,
a string or integer) and not a hub (seen on more than the fan-out limit of correlation IDs).
Each business transaction is named by `business_id`, the correlation ID of one of its members:
after a merge the biggest old business keeps its id (so a merge rewrites the smaller side
only); a piece split off by a new hub that holds no old id is named by its smallest member.
Readers show the *canonical member* instead (the member with the earliest first event),
which does not depend on arrival order.

Pure: no SQL but the read fragments at the bottom, which readers embed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

DEFAULT_IDENTITY_KEYS = (
    "order_id",
    "external_order_id",
    "marketplace_order_id",
    "erp_document",
    "shipment_id",
    "tracking_number",
    "return_id",
    "rma",
)
DEFAULT_FANOUT = 20
MAX_LINK_LEN = 128
PLACEHOLDERS = frozenset({"", "0", "-", "n/a", "na", "none", "null", "unknown", "tbd", "test"})
# why a key value made no link (a label of controltower_identity_links_refused_total)
REFUSALS = ("placeholder", "too_long", "malformed", "hub")

# Advisory-lock class ids (two-int form: a key space of its own) for linking.
LOCK_VALUE = 0x6C696E6B  # "link": one identity value (kind and value hashed)
LOCK_BUSINESS = 0x62697A7A  # one business id


def key_text(value: Any) -> str | None:
    """The text a key value is stored and linked as: strings as sent, integers in decimal;
    None for anything else (objects, lists inside lists, booleans, floats)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def refusal(value: Any) -> str | None:
    """Why this identity value cannot link (`placeholder`, `too_long`, `malformed`), or None."""
    text = key_text(value)
    if text is None:
        return "malformed"
    core = text if text.isascii() else "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    if core.strip().lower() in PLACEHOLDERS:  # also "n/a" with a zero-width space or a BOM
        return "placeholder"
    if len(text) > MAX_LINK_LEN:
        return "too_long"
    return None


def identity_values(order_id: Any, attributes: Mapping[str, Any], kinds: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Every (kind, raw value) of an event under the identity `kinds`: the `order_id` field and
    the attributes, a list counting as its items. Whether each can link is `refusal`'s call."""
    if order_id is not None and "order_id" in kinds:
        yield "order_id", order_id
    if not attributes:
        return
    for kind in kinds:
        value = attributes.get(kind)
        if value is None:
            continue
        if type(value) is list:
            for item in value:
                yield kind, item
        else:
            yield kind, value


def is_hub(fanout: int, limit: int) -> bool:
    return fanout > limit


def components(members: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Connected components (each sorted, the list sorted by first member) of `members` under
    `edges` (pairs of correlation ids); an edge endpoint outside `members` joins them too."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for m in members:
        find(m)
    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra
    groups: dict[str, list[str]] = {}
    for m in parent:
        groups.setdefault(find(m), []).append(m)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def name_components(
    groups: Iterable[list[str]], old: Mapping[str, str], sizes: Mapping[str, int]
) -> dict[str, str]:
    """New business id per member. `old` maps each member to its current business id, `sizes`
    each current business id to its member count. A component keeps the id of its biggest old
    business whose id is one of its own members (ties: the smallest id), else its smallest
    member: so an id is always a member, and a merge renames only the smaller side."""
    out: dict[str, str] = {}
    for group in groups:
        inside = set(group)
        candidates = {old[m] for m in group if old.get(m) in inside}
        if candidates:
            name = min(candidates, key=lambda b: (-sizes.get(b, 0), b))
        else:
            name = group[0]
        for m in group:
            out[m] = name
    return out


# -- read fragments ---------------------------------------------------------------------------
# Over the member rows `t` of `transactions` of one business transaction (GROUP BY business_id):
# its channel (the earliest member's that has one) and its canonical member.
BUSINESS_CHANNEL = (
    "(array_agg(t.channel ORDER BY t.first_event_at, t.correlation_id) FILTER (WHERE t.channel IS NOT NULL))[1]"
)
CANONICAL_MEMBER = "(array_agg(t.correlation_id ORDER BY t.first_event_at, t.correlation_id))[1]"
