"""The masking walk's fast path (known plain keys over clean strings) skips nothing it must mask."""

from __future__ import annotations

from datetime import UTC, datetime

from controltower.event import Event
from controltower.masking import Masker

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _event(attributes: dict) -> Event:
    return Event(event_id="e-1", occurred_at=NOW, correlation_id="c-1", channel="amazon", flow="order",
                 stage="received", attributes=attributes)


def test_plain_keys_learned_from_clean_values_still_mask_personal_values():
    masker = Masker()
    clean = {"sku": "SKU-1", "location": "DC-1"}
    event = _event(clean)
    assert masker.mask_event(event) == 0 and event.attributes == {"sku": "SKU-1", "location": "DC-1"}
    again = _event({"sku": "SKU-2", "location": "DC-2"})
    assert masker.mask_event(again) == 0 and again.attributes == {"sku": "SKU-2", "location": "DC-2"}
    # the same keys now carrying an email, a card number and a number: each is still masked or checked
    risky = _event({"sku": "jane.doe@example.com", "location": "4111 1111 1111 1111"})
    assert masker.mask_event(risky) == 2
    assert "jane.doe@example.com" not in str(risky.attributes) and "4111 1111 1111 1111" not in str(risky.attributes)


def test_keys_that_name_personal_data_or_pairs_never_take_the_fast_path():
    masker = Masker()
    for _ in range(2):  # the second time every key is known
        event = _event({"buyer_email": "x", "phone": "5551234", "fields": [{"name": "phone", "value": "5551234"}]})
        assert masker.mask_event(event) >= 3
        assert event.attributes["phone"] != "5551234" and event.attributes["fields"][0]["value"] != "5551234"
        assert event.attributes["fields"][0]["name"] == "phone"


def test_an_identifier_with_an_email_is_tokenised_after_clean_ones():
    masker = Masker()
    masker.mask_event(_event({"order_ref": "A-1"}))
    event = _event({"order_ref": "bob@example.com"})
    assert masker.mask_event(event) == 1
    assert event.attributes["order_ref"].startswith("email-")
