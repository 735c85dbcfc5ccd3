"""Tables written by `alerts/` (rule state, history, silences, notification outbox, incidents)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from controltower.schema.base import metadata

TS = sa.DateTime(timezone=True)

# One row per alert series (rule x labels): its state machine
# inactive -> pending -> firing -> resolved, acknowledgement and last notification.
alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("labels", JSONB, nullable=False),
    sa.Column("annotations", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("active_since", TS),
    sa.Column("firing_since", TS),
    sa.Column("resolved_at", TS),
    sa.Column("last_value", sa.Float),
    sa.Column("last_evaluated_at", TS, nullable=False),
    sa.Column("last_notified_at", TS),
    sa.Column("acknowledged_by", sa.Text),
    sa.Column("acknowledged_at", TS),
    sa.Column("summary", sa.Text),
    sa.Column("dashboard_url", sa.Text),
    # keep_firing_for: when the condition of a firing alert first stopped holding (0011)
    sa.Column("cleared_since", TS),
    sa.PrimaryKeyConstraint("fingerprint", name="alert_state_pkey"),
    sa.Index("alert_state_state_idx", "state"),
    sa.Index("alert_state_rule_idx", "rule"),
)

# History: every state change of every series.
alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("from_state", sa.Text, nullable=False),
    sa.Column("to_state", sa.Text, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("labels", JSONB, nullable=False),
    sa.Column("summary", sa.Text),
    sa.PrimaryKeyConstraint("id", name="alert_events_pkey"),
    sa.Index("alert_events_fingerprint_idx", "fingerprint", "at"),
    sa.Index("alert_events_at_idx", "at"),
)

# Silences: alerts whose labels match every matcher ({label: value}) change state but do not notify.
alert_silences = sa.Table(
    "alert_silences",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("matchers", JSONB, nullable=False),
    sa.Column("starts_at", TS, nullable=False),
    sa.Column("ends_at", TS, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("comment", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    sa.PrimaryKeyConstraint("id", name="alert_silences_pkey"),
    sa.Index("alert_silences_ends_idx", "ends_at"),
)

# The outbox: written in the same transaction as the state change, sent by the deliverer.
alert_notifications = sa.Table(
    "alert_notifications",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("receiver", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'pending'")),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("next_attempt_at", TS, nullable=False),
    sa.Column("sent_at", TS),
    sa.Column("last_error", sa.Text),
    # grouping (0011): one row carries every alert of one rule for one receiver and evaluation;
    # `fingerprint` is the first alert's, `payload.alerts` holds them all
    sa.Column("group_key", sa.Text),
    sa.Column("alert_count", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.PrimaryKeyConstraint("id", name="alert_notifications_pkey"),
    sa.Index("alert_notifications_due_idx", "status", "next_attempt_at"),
    sa.Index("alert_notifications_fingerprint_idx", "fingerprint"),
    sa.Index("alert_notifications_rule_idx", "rule", "created_at"),
    sa.Index(
        "alert_notifications_pending_idx", "receiver", "id", postgresql_where=sa.text("status = 'pending'")
    ),
)

# Who silenced or acknowledged what (written by the CLI and the HTTP API, read by `alerts audit`).
alert_audit = sa.Table(
    "alert_audit",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.PrimaryKeyConstraint("id", name="alert_audit_pkey"),
    sa.Index("alert_audit_at_idx", "at"),
)

# Alerting watches itself (0012): one row per rule, plus rule = '' for the evaluation cycle as a
# whole: last run and success, the last error and since when it fails, impact amounts ignored.
alert_evaluations = sa.Table(
    "alert_evaluations",
    metadata,
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("last_run_at", TS),
    sa.Column("last_success_at", TS),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", TS),
    sa.Column("failing_since", TS),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("ignored_amounts_total", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("interval_seconds", sa.Float),
    sa.PrimaryKeyConstraint("rule", name="alert_evaluations_pkey"),
)

# Tickets opened by `type: ticket` receivers (0014): one per receiver and dedup key
# (`alerts.content.dedup_key`), so a re-sent firing notification never opens a second ticket and
# the resolved one closes the ticket it opened. `state`: open | closed.
alert_tickets = sa.Table(
    "alert_tickets",
    metadata,
    sa.Column("receiver", sa.Text, nullable=False),
    sa.Column("dedup_key", sa.Text, nullable=False),
    sa.Column("ticket_key", sa.Text, nullable=False),
    sa.Column("ticket_id", sa.Text),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("closed_at", TS),
    sa.PrimaryKeyConstraint("receiver", "dedup_key", name="alert_tickets_pkey"),
)

# Incidents (0013): alerts that share a cause (the most upstream red hop of their channel, else
# their SLA) grouped into one paged thing; at most one not resolved per `key`.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # open | acknowledged | resolved
    sa.Column("title", sa.Text, nullable=False),  # kept current while open
    sa.Column("cause", sa.Text),
    sa.Column("severity", sa.Text, nullable=False),  # the worst of its alerts
    sa.Column("summary", sa.Text),  # the title as at the first page; the resolved notification repeats it
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("acknowledged_at", TS),
    sa.Column("acknowledged_by", sa.Text),
    sa.Column("resolved_at", TS),
    sa.Column("last_notified_at", TS),
    sa.Column("notified_receivers", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("repeat_interval_seconds", sa.Float),  # the first alert's rule's repeat_interval
    sa.Column("channels", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("impact", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # summed over its alerts
    sa.Column("updated_at", TS, nullable=False),
    sa.PrimaryKeyConstraint("id", name="incidents_pkey"),
    sa.Index("incidents_open_key_idx", "key", unique=True, postgresql_where=sa.text("state <> 'resolved'")),
    sa.Index("incidents_state_idx", "state", "opened_at"),
)

# The alerts of an incident: attached when they fire, kept until the incident resolves.
incident_alerts = sa.Table(
    "incident_alerts",
    metadata,
    sa.Column("incident_id", sa.BigInteger, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("labels", JSONB, nullable=False),
    sa.Column("attached_at", TS, nullable=False),
    sa.Column("first", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.PrimaryKeyConstraint("incident_id", "fingerprint", name="incident_alerts_pkey"),
    sa.Index("incident_alerts_fingerprint_idx", "fingerprint"),
)

# An incident's timeline: opened, alert attached, alert resolved, notified, acknowledged, resolved.
incident_events = sa.Table(
    "incident_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("incident_id", sa.BigInteger, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("detail", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.PrimaryKeyConstraint("id", name="incident_events_pkey"),
    sa.Index("incident_events_incident_idx", "incident_id", "at"),
)
