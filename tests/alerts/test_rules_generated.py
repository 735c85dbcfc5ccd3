"""Generated hostile rule files: every outcome is a loaded rule set or one `file:line` ConfigError.

Odd key spellings (case, full-width, zero-width, separators), huge and non-finite numbers,
Unicode confusables, dates, deep nesting and arbitrary text; a rule that loads must also
evaluate and render without raising.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.receivers import MAX_DURATION_SECONDS
from alerts.rules import parse
from alerts.state import AlertState, observe, transition
from alerts.templates import ROW_FIELDS, render, template_fields
from controltower.errors import ConfigError
from controltower.yamlfile import loads

SOURCE = "alerts.yaml"
ERROR = re.compile(r"^alerts\.yaml:\d+: \S")
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
BASE = {
    "receivers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}},
    "default_receivers": ["hook"],
    "rules": [{"name": "UnpostedOrders", "sla": "erp_posting", "field": "open_breaches", "op": ">", "value": 0,
               "for": "10m", "annotations": {"summary": "{channel}: {open_breaches} unposted, {oldest_breach_human}"}}],
}
RULE_KEYS = ["name", "sla", "channel", "window", "field", "op", "value", "for", "severity", "labels", "annotations",
             "runbook_url", "repeat_interval", "receivers", "and", "keep_firing_for", "no_data", "impact",
             "max_notifications_per_hour", "digest_interval", "description"]
TOP_KEYS = ["rules", "receivers", "default_receivers", "routes", "watchdog"]


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


spelling = st.sampled_from([
    str.upper, str.title, _fullwidth, lambda k: k.replace("_", "-"), lambda k: k + " ",
    lambda k: k[:1] + "\u200b" + k[1:], lambda k: k.replace("a", "\u0430"),  # Cyrillic a
    lambda k: k.replace("e", "\u0435"), lambda k: "\ufeff" + k, lambda k: k,
])
confusable_text = st.text(
    alphabet=st.sampled_from(list("aeoAEO01_-:.{} \t\n") + ["\u200b", "\u200d", "\u0430", "\u0435", "\uff41",
                                                             "\u2212", "\u00a0", "\U0001f600", "\u202e"]),
    max_size=30,
)
numbers = st.one_of(
    st.integers(), st.integers(min_value=10**18, max_value=10**400), st.just(-(10**400)),
    st.floats(allow_nan=True, allow_infinity=True), st.just(1e308), st.just(5e-324),
)
durations = st.one_of(
    st.from_regex(r"\A-?[0-9]{1,400}(\.[0-9]{1,5})?(ms|s|m|h|d|w)?\Z"), st.just("1e300s"), st.just("nan"),
    st.just("inf"), st.just("-0s"), st.just("\uff11\uff10m"),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, confusable_text, durations,
                    st.dates(), st.datetimes(timezones=st.just(UTC)))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(confusable_text, inner, max_size=3)),
                      max_leaves=10)


def _outcome(text: str) -> None:
    try:
        ruleset = parse(loads(text, SOURCE))
    except ConfigError as exc:
        assert ERROR.match(str(exc)), str(exc)
        return
    row = {name: 1 for name in ROW_FIELDS} | {"sla": "erp_posting", "channel": "amazon", "window": "1h",
                                               "health": "critical", "oldest_breach_ms": 5_400_000}
    for rule in ruleset.rules:  # what loads also evaluates and renders without raising
        for seconds in (rule.for_seconds, rule.keep_firing_for_seconds, rule.repeat_interval_seconds or 0):
            assert 0 <= seconds <= MAX_DURATION_SECONDS
        state, _ = transition(AlertState(), observe(rule, row), NOW, rule)
        transition(state, observe(rule, None), NOW, rule)
        rule.numeric(row)
        for text_ in rule.annotations.values():
            render(text_, template_fields(row, rule))


def _dump(doc: object) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(RULE_KEYS), spell=spelling, value=values)
def test_a_rule_field_with_any_spelling_and_value(key, spell, value):
    doc = yaml.safe_load(_dump(BASE))
    doc["rules"][0][spell(key)] = value
    _outcome(_dump(doc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(TOP_KEYS), spell=spelling, value=values)
def test_a_top_level_key_with_any_spelling_and_value(key, spell, value):
    doc = yaml.safe_load(_dump(BASE))
    doc[spell(key)] = value
    _outcome(_dump(doc))


@settings(max_examples=100, deadline=None)
@given(value=numbers, field=st.sampled_from(["open_breaches", "within_target_ratio", "volume_ratio", "health"]))
def test_extreme_thresholds(value, field):
    doc = yaml.safe_load(_dump(BASE))
    doc["rules"][0].update(field=field, value=value)
    doc["rules"][0]["and"] = [{"field": "count", "op": ">=", "value": value}]
    _outcome(_dump(doc))


@settings(max_examples=60, deadline=None)
@given(duration=durations, key=st.sampled_from(["for", "keep_firing_for", "repeat_interval", "digest_interval"]))
def test_extreme_durations(duration, key):
    doc = yaml.safe_load(_dump(BASE))
    doc["rules"][0][key] = duration
    _outcome(_dump(doc))


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(min_value=1, max_value=5000), opener=st.sampled_from(["[", "{a: "]),
       where=st.sampled_from(["labels", "annotations", "and", "value"]))
def test_deep_nesting(depth, opener, where):
    closer = "]" if opener == "[" else "}"
    text = _dump(BASE) + f"watchdog: {opener * depth}1{closer * depth}\n"
    _outcome(text)
    rule = "rules:\n  - name: A\n    sla: s\n    field: value\n    op: '>'\n    value: 1\n"
    _outcome(rule + f"    {where}: {opener * depth}1{closer * depth}\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    _outcome(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["rules:", "  - name: A", "    value: 1", "? [a, {b: 1}]", ": x", "!!python/object x",
                                 "x: 2026-13-45", "y: &a [*a]", "- - -", "  sla: s", "\t", "%YAML 1.1", "---",
                                 "field: value", "op: '>'", "x: !!binary zz", "z: 0x_", "k: 1e400"]), max_size=12))
def test_line_soup(lines):
    _outcome("\n".join(lines))
