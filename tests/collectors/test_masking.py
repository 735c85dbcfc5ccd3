"""Personal data masking: by key, by value, nested shapes, custom rules, and through the API."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from controltower.errors import ConfigError
from controltower.event import Event
from controltower.masking import Masker, MaskingRules, normalise_key


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


# -- issue 10 #14: every field, every spelling, values anywhere -------------------------------

def full_event(**fields) -> Event:
    base = {"event_id": "e1", "occurred_at": datetime.now(UTC), "correlation_id": "C-1", "channel": "amazon",
            "flow": "order", "stage": "received"}
    return Event(**(base | fields))


@pytest.mark.parametrize(
    "key",
    ["buyer__name", "customer_full_name", "person_name", "attn", "Attn", "ATTN", "buyerName", "Buyer-Name",
     "buyer.name", "buyer name", "buy\u200ber_name", "ｂｕｙｅｒ＿ｎａｍｅ", "ｃｕｓｔｏｍｅｒ", "recipient\u200d", "ShipToName",
     "consignee", "cardholder"],
)
def test_name_keys_are_recognised_in_any_spelling(key):
    e = event(payload={key: "Jane Doe"})
    Masker().mask_event(e)
    assert e.payload == {key: "J*** D***"}


@pytest.mark.parametrize(
    ("key", "value", "masked"),
    [
        ("Phone\u200b", "+1 206 555 0143", "***43"),
        ("ｅｍａｉｌ", "jane@example.com", "j***@***.com"),
        ("card_number", "4111 1111 1111 1111", "[card …1111]"),
        ("cc", 4111111111111111, "[card …1111]"),
        ("IBAN", "DE89 3704 0044 0532 0130 00", "***"),
        ("shipping-address", {"street": "12 Main St", "city": "Seattle", "zip": "98101"},
         {"street": "***", "city": "Seattle", "zip": "981***"}),
    ],
)
def test_personal_keys_mask_their_values(key, value, masked):
    e = event(payload={key: value})
    Masker().mask_event(e)
    assert e.payload == {key: masked}


def test_names_of_things_stay_readable():
    payload = {"sku_name": "Blue mug", "carrier_name": "UPS", "product_display_name": "Mug", "warehouse name": "DC-1",
               "file_name": "feed.csv", "card_type": "visa", "email_status": "sent"}
    e = event(payload=dict(payload))
    assert Masker().mask_event(e) == 0 and e.payload == payload


def test_key_value_arrays_mask_the_value_by_its_name():
    e = event(payload={
        "fields": [{"name": "phone", "value": "+1 206 555 0143"}, {"name": "gift", "value": "yes"},
                   {"key": "buyerEmail", "value": {"stringValue": "jane@example.com"}}],
        "custom": [{"Name": "Ship To Name", "Value": "Jane Doe"}],
    })
    Masker().mask_event(e)
    assert e.payload == {
        "fields": [{"name": "phone", "value": "***43"}, {"name": "gift", "value": "yes"},
                   {"key": "buyerEmail", "value": {"stringValue": "j***@***.com"}}],
        "custom": [{"Name": "Ship To Name", "Value": "J*** D***"}],
    }


@pytest.mark.parametrize(
    "text",
    ["jane@example.com", "jane%40example.com", "JANE%40EXAMPLE.COM", "ｊａｎｅ＠ｅｘａｍｐｌｅ.com", "ja\u200bne@exa\u200bmple.com",
     "mailto:jane@example.com?subject=x"],
)
def test_emails_are_found_in_any_value_and_any_encoding(text):
    e = event(attributes={"ref_note": text}, payload={"deep": [{"x": text}]})
    Masker().mask_event(e)
    stored = str(e.attributes) + str(e.payload)
    assert "jane" not in stored.lower() and "example" not in stored.lower()


def test_emails_as_object_keys_become_stable_tokens():
    e1 = event(payload={"jane@example.com": {"orders": 2}, "bob%40example.com": 1})
    e2 = event(payload={"JANE@example.com": {"orders": 3}})
    Masker().mask_event(e1)
    Masker().mask_event(e2)
    keys = list(e1.payload)
    assert all(k.startswith("email-") and len(k) == 18 for k in keys) and len(set(keys)) == 2
    assert list(e2.payload) == keys[:1]  # the same address, the same token


def test_identifiers_keep_correlating_without_the_clear_email():
    masker = Masker()
    # "SO-jane@example.com" would be one address (a valid local part); "/" and ":" end it
    a = full_event(event_id="evt:jane@example.com", correlation_id="jane@example.com", order_id="SO-1/jane@example.com",
                   error_code="InvalidBuyer[jane@example.com]", attributes={"external_order_id": "jane@example.com"})
    b = full_event(correlation_id="Jane@Example.com", order_id="SO-1/jane@example.com")
    masker.mask_event(a)
    masker.mask_event(b)
    token = a.correlation_id
    assert token.startswith("email-") and "jane" not in token
    assert b.correlation_id == token and b.order_id == a.order_id == f"SO-1/{token}"
    assert a.event_id == f"evt:{token}" and a.error_code == f"InvalidBuyer[{token}]"
    assert a.attributes == {"external_order_id": token}
    assert masker.mask_identifier("jane@example.com") == token  # what search must look up
    other = Masker(MaskingRules(**{**MaskingRules.defaults().__dict__, "hash_key": "another secret"}))
    assert other.mask_identifier("jane@example.com") != token  # keyed: not a plain hash


def test_numeric_identifiers_are_not_mistaken_for_cards():
    e = full_event(order_id="4111111111111111", attributes={"external_order_id": "4111111111111111",
                                                           "tracking_number": "9400111899223197428490"})
    Masker().mask_event(e)
    assert e.order_id == "4111111111111111" and e.attributes["tracking_number"] == "9400111899223197428490"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("card 4111 1111 1111 1111 declined", "card [card …1111] declined"),
        ("pan=4111-1111-1111-1111;", "pan=[card …1111];"),
        ("amex 378282246310005 ok", "amex [card …0005] ok"),
        ("not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112"),  # fails Luhn
        ("order 1234567890123456 shipped", "order 1234567890123456 shipped"),  # no card network starts with 1
        ("refund to DE89 3704 0044 0532 0130 00 done", "refund to [iban DE…3000] done"),
        ("refund to GB82WEST12345698765432", "refund to [iban GB…5432]"),
        ("ref DE89 3704 0044 0532 0130 01", "ref DE89 3704 0044 0532 0130 01"),  # bad checksum
    ],
)
def test_cards_and_ibans_are_masked_by_checksum(text, masked):
    e = event(payload={"comment": text}, attributes={"misc": text})
    Masker().mask_event(e)
    assert e.payload == {"comment": masked} and e.attributes == {"misc": masked}


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        ("Address invalid for customer Jane Doe: 12 Main Street, Apt 4 Seattle",
         "Address invalid for customer J*** D***: [address] Seattle"),
        ("carrier rejected: call recipient at +1 206 555 0143", "carrier rejected: call recipient at [phone …43]"),
        ("Attn: Mary-Ann O'Neil, (206) 555-0143", "Attn: M*** O***, [phone …43]"),
        ("ship to John Smith, Hauptstraße 5, Berlin", "ship to J*** S***, [address], Berlin"),
        ("amazon order 113-4567890-1234567 not acknowledged", "amazon order 113-4567890-1234567 not acknowledged"),
        ("Customer Service unavailable (HTTP 503)", "Customer Service unavailable (HTTP 503)"),
    ],
)
def test_free_text_messages_lose_names_phones_and_streets(message, masked):
    e = full_event(error_message=message, payload={"notes": message})
    Masker().mask_event(e)
    assert e.error_message == masked and e.payload == {"notes": masked}


def test_limits_reject_the_record_naming_the_field():
    from controltower.errors import EventError

    deep: object = "x"
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(EventError, match=r"^payload: nested deeper than 32 levels$"):
        Masker().mask_event(event(payload=deep))
    with pytest.raises(EventError, match=r"^attributes\.order_total: integer of 30 digits is outside the 64-bit range"):
        Masker().mask_event(event(attributes={"order_total": 10**29}))
    with pytest.raises(EventError, match=r"^payload\.lines\[1\]\.price: number 1e\+20 is outside"):
        Masker().mask_event(event(payload={"lines": [{"price": 1}, {"price": 1e20}]}))
    ok: object = "x"
    for _ in range(31):
        ok = [ok]
    Masker().mask_event(event(payload={"v": ok}))  # 32 levels: the payload object and 31 lists in it


def test_the_hash_key_setting_keys_identifier_tokens_and_stays_out_of_repr(tmp_path):
    from controltower.settings import Settings

    default = Masker(MaskingRules.for_settings(Settings.load(environ={}))).mask_identifier("jane@example.com")
    keyed_settings = Settings.load(environ={"CONTROLTOWER_MASKING_HASH_KEY": "s3cret-installation-key"})
    keyed = Masker(MaskingRules.for_settings(keyed_settings)).mask_identifier("jane@example.com")
    again = Masker(MaskingRules.for_settings(keyed_settings)).mask_identifier("jane@example.com")
    assert keyed.startswith("email-") and default.startswith("email-")
    assert keyed != default and keyed == again  # stable per key, different across keys
    assert "s3cret-installation-key" not in repr(keyed_settings)
    url = "postgresql+psycopg://u:pw-in-url@db/ct"
    assert "pw-in-url" not in repr(Settings.load(environ={"CONTROLTOWER_DATABASE_URL": url}))


@pytest.mark.parametrize("cid", [
    # hex ids from a soak: each holds a decimal run with a 13–19 digit stretch that passes Luhn
    "2095285ecc4045478615900fcf287ec8", "9f67127bd9564e5389745807317144db", "8552c62713104034967529edea667af0",
])
def test_a_hex_trace_id_holding_a_luhn_valid_digit_run_is_not_a_card(cid):
    import re

    from controltower.pii import is_card

    runs = re.findall(r"\d{13,}", cid)
    assert any(is_card(r[i:i + n]) for r in runs for n in range(13, 20) for i in range(len(r) - n + 1)), \
        "the id must hold a card-shaped run, or this test proves nothing"
    e = Event(f"{cid}:order.received:1", datetime.now(UTC), cid, "amazon", "order", "received", attributes={})
    Masker().mask_event(e)
    assert e.correlation_id == cid and e.event_id == f"{cid}:order.received:1"


def test_a_card_number_standing_apart_is_still_masked_in_ids_and_text():
    e = event(error_message="paid with 4111 1111 1111 1111, declined")
    e.order_id = "PAY-4111111111111111"
    Masker().mask_event(e)
    assert "4111" not in e.order_id.replace("…1111", "") and "4111 1111 1111 1111" not in (e.error_message or "")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ssn", "123-45-6789"), ("SSN", 123456789), ("socialSecurityNumber", "123-45-6789"), ("taxId", "123-45-6789"),
        ("national_insurance_number", "QQ123456C"), ("passport_number", "X1234567"), ("driverLicense", "D1234567"),
        ("dob", "1980-01-02"), ("dateOfBirth", "1980-01-02"), ("birth_date", "1980-01-02"),
        ("password", "hunter2"), ("accessToken", "eyJhbGciOi"), ("api_key", "sk_live_1"), ("Authorization", "Bearer x"),
        ("client_secret", "s3cr3t"), ("cvv", 123), ("card_security_code", "123"),
    ],
)
def test_national_ids_birth_dates_and_secrets_are_masked(key, value):
    """None of these were masked: an SSN, a date of birth, a password or a CVV was stored in clear."""
    e = event(payload={key: value, "sku": "A-1"})
    Masker().mask_event(e)
    assert e.payload == {key: "***", "sku": "A-1"}


def test_key_value_pairs_in_any_spelling_mask_the_value():
    """`{"k": "phone", "v": …}`, `fieldName`/`fieldValue`, `attribute_name`/`attribute_value` and
    `name`/`stringValue` kept the phone number in clear."""
    phone = "+1 206 555 0143"
    e = event(payload={"a": [{"k": "phone", "v": phone}, {"fieldName": "Phone", "fieldValue": phone},
                             {"attribute_name": "phone", "attribute_value": phone}, {"name": "phone", "stringValue": phone},
                             {"k": "gift", "v": "yes"}]})
    Masker().mask_event(e)
    assert e.payload == {"a": [{"k": "phone", "v": "***43"}, {"fieldName": "Phone", "fieldValue": "***43"},
                               {"attribute_name": "phone", "attribute_value": "***43"},
                               {"name": "phone", "stringValue": "***43"}, {"k": "gift", "v": "yes"}]}


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        ("SSN 123-45-6789 rejected by payroll", "SSN [ssn] rejected by payroll"),
        ("login failed: password=hunter2 for svc", "login failed: password=*** for svc"),
        ("upstream said Authorization: Bearer eyJhbGciOi.x.y", "upstream said Authorization: ***"),
        ("callback https://x.example/cb?token=abcdef&page=2", "callback https://x.example/cb?token=***&page=2"),
        ("api_key: sk_live_123; retry", "api_key: ***; retry"),
        ("token expired, the password was wrong", "token expired, the password was wrong"),  # no value: kept
        ("order 113-4567890-1234567 not found", "order 113-4567890-1234567 not found"),
    ],
)
def test_error_messages_mask_ssns_and_secrets_after_a_cue(message, masked):
    """An SSN or a `password=…` in an error message was stored in clear."""
    e = event(error_message=message)
    Masker().mask_event(e)
    assert e.error_message == masked
