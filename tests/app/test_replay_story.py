"""The transaction story tells a replay: who replayed it, when, and when the order then posted."""

from __future__ import annotations

from app.story import transaction_story


def _tx(posted: str | None, source: str = "replay") -> dict:
    milestones = {"order.received": "2026-03-02T10:30:00Z", "order.replayed": "2026-03-02T10:42:00Z"}
    events = [
        {"occurred_at": "2026-03-02T10:30:00Z", "flow": "order", "stage": "received", "status": "ok"},
        {"occurred_at": "2026-03-02T10:35:00Z", "flow": "order", "stage": "erp_posted", "status": "dead_letter"},
        {"occurred_at": "2026-03-02T10:42:00Z", "flow": "order", "stage": "replayed", "status": "ok",
         "system": "controltower", "source": source,
         "attributes": {"replay_of": "e-1", "replay_by": "dana", "replay_produces": "order.erp_posted"}},
    ]
    if posted:
        milestones["order.erp_posted"] = posted
    return {"channel": "amazon", "correlation_ids": ["c-1"], "milestones": milestones, "events": events}


def test_the_story_says_who_replayed_it_and_when_it_posted() -> None:
    story = transaction_story(_tx("2026-03-02T10:43:00Z"))
    assert "replayed by dana at 10:42, posted at 10:43" in story
    assert "replayed 10:42" not in story  # the lineage milestone is told once, by the replay clause


def test_the_story_says_a_replayed_order_has_not_posted_yet() -> None:
    assert "replayed by dana at 10:42, not posted yet" in transaction_story(_tx(None))


def test_a_sender_cannot_forge_a_replay_line() -> None:
    forged = transaction_story(_tx("2026-03-02T10:43:00Z", source="http"))  # stage "replayed" sent by anyone
    assert "replayed by dana" not in forged
