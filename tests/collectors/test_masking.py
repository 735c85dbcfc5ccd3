"""Personal data masking: by key, by value, nested shapes, custom rules, and through the API."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from collectors.masking import Masker, MaskingRules, normalise_key
from controltower.errors import ConfigError
from controltower.event import Event


def event(attributes=None, payload=None, error_message=None) -> Event:
    return Event("e1", datetime.now(UTC), "C-1", "amazon", "order", "received",
                 attributes=attributes or {}, payload=payload, error_message=error_message)


def test_keys_are_normalised():
    assert normalise_key("BuyerEmail") == "buyer_email"
    assert normalise_key("ship-to name") == "ship_to_name"


def test_marketplace_payload_is_masked_but_business_keys_stay():
    e = event(
        attributes={"external_order_id": "113-4567890-1234567", "sku": "MUG-BLUE", "buyer_email": "jane.doe@gmail.com"},
        payload={
            "BuyerInfo": {"BuyerName": "Jane Doe", "BuyerEmail": "jdoe@marketplace.amazon.com"},
            "ShippingAddress": {"Name": "Jane Doe", "AddressLine1": "12 Main St", "City": "Seattle",
                                "PostalCode": "98101", "Phone": "+1 206-555-0100", "CountryCode": "US"},
            "OrderItems": [{"SKU": "MUG-BLUE", "ProductName": "Blue mug"}],
            "note": "call me at jane@example.org",
        },
    )
    changed = Masker().mask_event(e)
    assert e.attributes == {"external_order_id": "113-4567890-1234567", "sku": "MUG-BLUE", "buyer_email": "j***@***.com"}
    p = e.payload
    assert p["BuyerInfo"] == {"BuyerName": "J*** D***", "BuyerEmail": "j***@***.com"}
    assert p["ShippingAddress"] == {"Name": "J*** D***", "AddressLine1": "***", "City": "Seattle",
                                    "PostalCode": "981***", "Phone": "***00", "CountryCode": "US"}
    assert p["OrderItems"] == [{"SKU": "MUG-BLUE", "ProductName": "Blue mug"}]
    assert p["note"] == "call me at j***@***.org"
    assert changed == 8


def test_phone_like_order_numbers_are_not_masked_outside_phone_keys():
    e = event(attributes={"external_order_id": "206-555-0100", "tracking_number": "1Z999AA10123456784"})
    assert Masker().mask_event(e) == 0
    assert e.attributes["external_order_id"] == "206-555-0100"


def test_emails_in_error_messages_are_masked():
    e = event(error_message="customer bob@shop.example rejected")
    Masker().mask_event(e)
    assert e.error_message == "customer b***@***.example rejected"


def test_custom_rules_file(tmp_path):
    rules = tmp_path / "masking.yaml"
    rules.write_text("name: ['^nickname$']\nkeep: ['^buyer_email$']\nmask_emails_in_text: false\n")
    e = event(attributes={"nickname": "Jo", "buyer_email": "a@b.com", "name": "Kept Now"}, payload={"t": "x@y.com"})
    Masker(MaskingRules.load(rules)).mask_event(e)
    assert e.attributes == {"nickname": "J***", "buyer_email": "a@b.com", "name": "Kept Now"}
    assert e.payload == {"t": "x@y.com"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("email: 3\n", ":1: email: expected a list"),
        ("phone:\n  - '(unclosed'\n", ":2: phone[0]: bad regular expression"),
        ("nmae: [x]\n", ":1: unknown key 'nmae'"),
        ("email: [a]\nemail: [b]\n", ":2: duplicate key 'email'"),
        ("email: [a\n", "not valid YAML"),
    ],
)
def test_bad_rules_name_the_line(tmp_path, text, message):
    rules = tmp_path / "masking.yaml"
    rules.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        MaskingRules.load(rules)
    assert message in str(info.value) and str(rules) in str(info.value)


def test_api_stores_masked_data(collector, engine):
    record = {
        "event_id": "m1", "occurred_at": datetime.now(UTC).isoformat(), "correlation_id": "C-mask",
        "channel": "shopify", "flow": "order", "stage": "received",
        "attributes": {"customer_email": "pat@example.com", "external_order_id": "#1001"},
        "payload": {"customer": {"first_name": "Pat", "phone": "555 123 4567", "email": "pat@example.com"}},
    }
    response = httpx.post(collector.url + "/v1/events", json=[record])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT attributes::text || payload::text FROM events WHERE event_id = 'm1'")).scalar()
    assert "pat@example.com" not in row and "Pat" not in row and "4567" not in row
    assert "#1001" in row and "p***@***.com" in row
