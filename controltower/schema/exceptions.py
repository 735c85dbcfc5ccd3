"""Tables of the exception work queue (0016): written by the metrics room's grouping job; the
state columns of `exception_groups` and `exception_actions` also by `controltower.exceptionops`
(dashboard, API, CLI)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from controltower.schema.base import metadata

TS = sa.DateTime(timezone=True)

# One row per failure signature. state: open | snoozed | resolved; resolution: "milestone
# reached" | "quiet" | "manual"; opened_at: when it last became open (time-to-resolve).
exception_groups = sa.Table(
    "exception_groups",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("milestone", sa.Text, nullable=False),
    sa.Column("error_code", sa.Text, nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False),  # the normalised message (the signature's)
    sa.Column("sample_message", sa.Text),  # one occurrence's message, as stored (masked)
    sa.Column("class", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="open"),
    sa.Column("first_seen_at", TS, nullable=False),
    sa.Column("last_seen_at", TS, nullable=False),
    sa.Column("occurrence_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("open_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("assignee", sa.Text),
    sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("snoozed_until", TS),
    sa.Column("resolved_at", TS),
    sa.Column("resolved_by", sa.Text),
    sa.Column("resolution", sa.Text),
    sa.Column("resolution_note", sa.Text),
    sa.Column("reopen_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("id", name="exception_groups_pkey"),
    sa.UniqueConstraint("signature", name="exception_groups_signature_key"),
    sa.CheckConstraint("state IN ('open', 'snoozed', 'resolved')", name="exception_groups_state_check"),
    sa.Index("exception_groups_state_idx", "state", "last_seen_at"),
    sa.Index("exception_groups_channel_idx", "channel", "state"),
)

# One row per (group, correlation id, source): source error | dead_letter | breach | orphan.
# `at` is the latest failure's time (event occurred_at, breach due_at, orphaned_at), `count`
# how many distinct later failures it saw; `awaits` the milestones whose arrival resolves it.
exception_occurrences = sa.Table(
    "exception_occurrences",
    metadata,
    sa.Column("group_id", sa.BigInteger, sa.ForeignKey("exception_groups.id", ondelete="CASCADE"), nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text),
    sa.Column("at", TS, nullable=False),
    sa.Column("first_at", TS, nullable=False),
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("awaits", ARRAY(sa.Text), nullable=False),
    sa.Column("error_code", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("seen_at", TS, nullable=False),
    sa.Column("resolved_at", TS),
    sa.PrimaryKeyConstraint("group_id", "correlation_id", "source", name="exception_occurrences_pkey"),
    sa.Index("exception_occurrences_correlation_idx", "correlation_id"),
    sa.Index("exception_occurrences_open_idx", "group_id", postgresql_where=sa.text("resolved_at IS NULL")),
)

# The audit trail: every action on a group, by a person (the signed-in identity, --by, the
# API's `by`) or by the grouping job (actor "controltower": auto-resolve, reopen, wake).
exception_actions = sa.Table(
    "exception_actions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
    sa.Column("group_id", sa.BigInteger, sa.ForeignKey("exception_groups.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("via", sa.Text, nullable=False),
    sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.PrimaryKeyConstraint("id", name="exception_actions_pkey"),
    sa.Index("exception_actions_group_idx", "group_id", "id"),
    sa.Index("exception_actions_at_idx", "at"),
)
