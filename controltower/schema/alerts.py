"""Tables written by `alerts/` (rule state, history, silences, notification outbox)."""

from __future__ import annotations
