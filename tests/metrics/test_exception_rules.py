"""Pure: the signature normaliser and the classifier (table-driven), and exceptions.yaml errors with file:line."""

from __future__ import annotations

import pytest

from controltower.errors import ConfigError
from controltower.yamlfile import loads
from metrics import exceptionrules, signatures

NORMALISED = [
    ("Order 112-3345 failed: SKU 'AB-12' not found (id=9f8e...)", "order <n> failed: sku <q> not found (<n>)"),
    ("Order 554-1 failed: SKU 'ZZ' not found (id=77aa...)", "order <n> failed: sku <q> not found (<n>)"),
    ("  Connection   REFUSED\n", "connection refused"),
    ('Customer "Dana" not allowed', "customer <q> not allowed"),
    ("can't post order 'A1'", "can't post order <q>"),
    ("mail to dana@example.com bounced", "mail to <email> bounced"),
    ("req 3f2b8c1a-1111-2222-3333-444455556666 failed", "req <uuid> failed"),
    ("trace deadbeefcafe lost", "trace <hex> lost"),
    ("", ""),
    (None, ""),
]


@pytest.mark.parametrize(("message", "expected"), NORMALISED)
def test_normalise(message, expected) -> None:
    assert signatures.normalise(message) == expected


def test_signature_groups_differing_ids_and_separates_channel_milestone_code() -> None:
    a = signatures.signature("amazon", "order.erp_posted", "E1", "Order 112-3345 failed: SKU 'AB-12' not found (id=9f8e...)")
    b = signatures.signature("amazon", "order.erp_posted", "e1 ", "Order 554-1 failed: SKU 'ZZ' not found (id=77aa...)")
    assert a == b and len(a) == 64
    assert a != signatures.signature("ebay", "order.erp_posted", "E1", "Order 1 failed: SKU 'X' not found (id=1)")
    assert a != signatures.signature("amazon", "order.received", "E1", "Order 1 failed: SKU 'X' not found (id=1)")
    assert a != signatures.signature("amazon", "order.erp_posted", "E2", "Order 1 failed: SKU 'X' not found (id=1)")


SHIPPED = exceptionrules.load()
CLASSIFIED = [
    ("ETIMEDOUT", "", "error", "timeout"),
    ("504", "upstream", "error", "timeout"),
    (None, "deadline exceeded while posting", "error", "timeout"),
    ("ECONNRESET", "", "dead_letter", "connection"),
    (None, "Connection refused by erp.local", "error", "connection"),
    ("503", "", "error", "connection"),
    (None, "HTTP 429 Too Many Requests", "error", "rate_limit"),
    (None, "Request throttled by Amazon SP-API", "error", "rate_limit"),
    ("401", "", "error", "auth"),
    (None, "OAuth token expired", "error", "auth"),
    (None, "Required field missing: ship_to.postal_code", "error", "validation"),
    (None, "Unknown SKU AB-12", "error", "mapping"),
    (None, "Order 112-3345 failed: SKU 'AB-12' not found", "error", "mapping"),
    (None, "Sales order already exists in ERP", "error", "duplicate"),
    (None, "Customer credit limit exceeded", "error", "business_rule"),
    (None, "Item out of stock at DC1", "error", "business_rule"),
    (None, "price mismatch: 10.00 vs 12.00", "error", "business_rule"),
    ("sla:erp_posting", "order.erp_posted not reached", "breach", "timeout"),
    ("orphan", "identity keys link to no order.received", "orphan", "mapping"),
    (None, "something odd happened", "error", "unknown"),
    (None, None, "error", "unknown"),
]


@pytest.mark.parametrize(("code", "message", "source", "expected"), CLASSIFIED)
def test_shipped_classification(code, message, source, expected) -> None:
    assert exceptionrules.classify(SHIPPED, error_code=code, message=message, source=source) == expected


def test_first_matching_rule_wins_and_scopes_narrow() -> None:
    rules = exceptionrules.parse(loads("""
quiet_minutes: 15
rules:
  - class: auth
    match: {message: [denied], channel: [ebay]}
  - class: validation
    match: {message: [denied]}
""", "x.yaml"))
    assert rules.quiet_minutes == 15
    assert exceptionrules.classify(rules, error_code=None, message="Access DENIED", source="error", channel="ebay") == "auth"
    assert exceptionrules.classify(rules, error_code=None, message="Access denied", source="error", channel="amazon") == "validation"
    assert exceptionrules.parse(loads("", "empty.yaml")).quiet_minutes == 60


BAD = [
    ("rules:\n  - class: timeout\n    match: {message: [x]}\n  - class: slow\n    match: {message: [y]}\n",
     "x.yaml:4: class: 'slow' is not one of"),
    ("rules:\n  - class: timeout\n    match: {mesage: [x]}\n", "x.yaml:3: match: unknown key 'mesage'"),
    ("quiet_minutes: soon\n", "x.yaml:1: quiet_minutes: 'soon' is not a whole number"),
    ("rules:\n  - class: timeout\n", "x.yaml:2: match: expected a mapping"),
    ("rules:\n  - class: timeout\n    match:\n      source: [breach, queue]\n", "x.yaml:4: match.source: 'queue'"),
    ("rule: []\n", "x.yaml:1: unknown key 'rule'"),
    ("rules:\n  - class: timeout\n    match: {message: []}\n", "x.yaml:3: match.message: expected a non-empty list"),
]


@pytest.mark.parametrize(("text", "error"), BAD)
def test_yaml_errors_name_file_and_line(text, error) -> None:
    with pytest.raises(ConfigError) as exc:
        exceptionrules.parse(loads(text, "x.yaml"))
    assert str(exc.value).startswith(error), str(exc.value)
