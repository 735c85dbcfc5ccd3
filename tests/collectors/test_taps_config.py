"""taps.yaml parsing and the declarative mapping: pure, table-driven, values computed by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collectors.taps.config import load_taps, loads_taps, subject_matches
from collectors.taps.mapping import MappingError
from collectors.taps.messages import Message, records_of
from controltower.errors import ConfigError

MAPPED = """\
taps:
  - name: erp-orders
    broker: rabbitmq
    url_env: CT_TEST_RABBIT
    queue: erp.orders
    format: mapped
    mapping:
      event_id: id
      occurred_at: header.ts
      correlation_id: order.ref
      channel: {const: amazon}
      flow: {const: order}
      stage: {path: status, map: {POSTED: erp_posted, FAILED: erp_posted}}
      status: {path: status, map: {POSTED: ok, FAILED: error}, default: ok}
      system: {const: middleware}
      error_message: error.text
      attributes: {external_order_id: order.marketplace_ref, sku: lines.0.sku}
    channel: amazon
    hop: ERP posting
    batch: 50
    batch_wait: 1s
probe_interval: 1m
replay:
  flows: {order: {produces: order.erp_posted}}
"""


def test_the_design_example_loads_with_its_defaults():
    config = loads_taps(MAPPED, "taps.yaml")
    tap = config.tap("erp-orders")
    assert (tap.queue, tap.quarantine, tap.batch, tap.batch_wait_seconds, tap.hop) == (
        "erp.orders", "erp.orders.quarantine", 50, 1.0, "ERP posting")
    assert config.probe_interval_seconds == 60.0
    assert tap.source == "tap:erp-orders"
    assert tap.broker_url({"CT_TEST_RABBIT": "amqp://u:p@h/"}) == "amqp://u:p@h/"
    with pytest.raises(ConfigError, match=r"taps.yaml:2: tap erp-orders: environment variable CT_TEST_RABBIT"):
        tap.broker_url({})


def test_mapping_turns_a_message_into_a_canonical_record():
    tap = loads_taps(MAPPED).taps[0]
    assert tap.mapping is not None
    message = {"id": "M-1", "header": {"ts": "2026-11-20T10:00:00Z"}, "status": "FAILED",
               "order": {"ref": "SO-9", "marketplace_ref": "113-1"}, "lines": [{"sku": "SKU-7"}],
               "error": {"text": "ERP timeout"}}
    assert tap.mapping.apply(message) == {
        "event_id": "M-1", "occurred_at": "2026-11-20T10:00:00Z", "correlation_id": "SO-9", "channel": "amazon",
        "flow": "order", "stage": "erp_posted", "status": "error", "system": "middleware",
        "error_message": "ERP timeout", "attributes": {"external_order_id": "113-1", "sku": "SKU-7"}}
    # an unknown status takes the default; a missing path is left out
    assert tap.mapping.apply({"order": {"ref": 42}, "status": "HELD"})["status"] == "ok"
    assert tap.mapping.apply({"order": {"ref": 42}})["correlation_id"] == "42"
    with pytest.raises(MappingError, match="no correlation_id"):
        tap.mapping.apply({"order": {}})
    with pytest.raises(MappingError, match="expected a JSON object"):
        tap.mapping.apply([1])


@pytest.mark.parametrize(("text", "expected"), [
    ("taps: []\n", "<string>:1: taps: expected a list"),
    ("taps:\n  - name: a\n    broker: kafka\n    queue: q\n", "<string>:3: broker: expected one of rabbitmq, jetstream"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n", "<string>:2: queue: required"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    url: amqp://u:s3cret@h/\n",
     "<string>:5: url: holds a password"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    qeue: x\n", "<string>:5: unknown key 'qeue'"),
    ("taps:\n  - {name: a, broker: rabbitmq, queue: q}\n  - {name: a, broker: rabbitmq, queue: r}\n",
     "<string>:3: tap name 'a' is used twice"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    format: mapped\n", "<string>:5: format: mapped needs a mapping"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    format: mapped\n    mapping:\n"
     "      correlation_id: ref\n      occured_at: ts\n", "<string>:8: 'occured_at' is not a canonical field"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    format: mapped\n    mapping:\n"
     "      correlation_id: ref\n", "<string>:6: mapping: occurred_at is required"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    format: mapped\n    mapping:\n"
     "      correlation_id: ref\n      occurred_at: ts\n      stage: {path: s, map: [1]}\n",
     "<string>:9: map: expected a mapping"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    format: mapped\n    mapping:\n"
     "      correlation_id: a..b\n      occurred_at: ts\n", "<string>:7: \"a..b\" is not a JSON path"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    batch: 0\n", "<string>:5: batch: expected a whole number"),
    ("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    batch_wait: soon\n", "<string>:5: batch_wait: \"soon\" is not a duration"),
    ("taps:\n  - name: a\n    broker: jetstream\n    stream: S\n    subject: s.>\n    quarantine: s.bad\n",
     "<string>:6: quarantine: 's.bad' matches the consumed subject"),
    ("taps:\n  - name: a\n    broker: jetstream\n    stream: S\n    queue: q\n", "<string>:5: queue: only for broker: rabbitmq"),
])
def test_mistakes_are_one_line_naming_file_and_line(text, expected):
    with pytest.raises(ConfigError) as caught:
        loads_taps(text)
    assert str(caught.value).startswith(expected), str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_mapping_error_reaches_the_cli_as_one_line(tmp_path):
    path = tmp_path / "taps.yaml"
    path.write_text("taps:\n  - name: a\n    broker: rabbitmq\n    queue: q\n    format: mapped\n    mapping:\n"
                    "      correlation_id: {paht: ref}\n      occurred_at: ts\n")
    with pytest.raises(ConfigError, match=r"taps.yaml:7: unknown key 'paht'"):
        load_taps(path)
    proc = subprocess.run([sys.executable, "-m", "wiring", "tap", "--config", str(path), "--once"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"{path}:7: unknown key 'paht'" in proc.stderr.replace("\n", "")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("pattern", "subject", "match"), [
    ("orders.>", "orders.quarantine", True), ("orders.>", "orders", False), ("orders.*", "orders.a.b", False),
    ("orders.*", "orders.a", True), ("a.b", "a.b", True), ("a.b", "a.c", False),
])
def test_subject_matching(pattern, subject, match):
    assert subject_matches(pattern, subject) is match


def test_records_get_the_broker_id_or_a_body_hash_and_the_replay_lineage():
    tap = loads_taps("taps:\n  - {name: a, broker: rabbitmq, queue: q}\n").taps[0]
    one = b'{"correlation_id": "c", "occurred_at": "2026-11-20T10:00:00Z"}'
    assert records_of(Message(one, message_id="m-7"), tap).records[0]["event_id"] == "m-7"
    hashed = records_of(Message(one), tap).records[0]["event_id"]
    assert hashed.startswith("sha256:") and hashed == records_of(Message(one), tap).records[0]["event_id"]
    two = b'[{"correlation_id": "c"}, {"correlation_id": "d", "event_id": "own"}, 5]'
    decoded = records_of(Message(two, message_id="m-8", replay_of="ev-1"), tap)
    assert [r["event_id"] for r in decoded.records] == ["m-8#0", "own"]
    assert [r["attributes"] for r in decoded.records] == [{"replay_of": "ev-1"}, {"replay_of": "ev-1"}]
    assert decoded.problem == "record 2: expected a JSON object, got int"
    assert records_of(Message(b"x" * (1 << 20 + 1)), tap).problem.startswith("message is 2097152 bytes")
    assert records_of(Message(b"{nope"), tap).problem.startswith("body is not valid JSON")


def test_the_shipped_example_loads():
    from pathlib import Path

    import collectors

    example = Path(collectors.__file__).parent / "taps.example.yaml"
    config = load_taps(example)
    assert {t.broker for t in config.taps} == {"rabbitmq", "jetstream"}
