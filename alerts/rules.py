"""Alert rules and receivers: the YAML model, validated with `file:line` errors.

A rule is a condition on one field of `sla_status` rows (`field`, `op`, `value`) matched by
SLA, channel and window; it fires once the condition has held for `for`. Receivers are named
notification targets (webhook, slack, pagerduty, email, log); secrets are never written in the
file: they are read from the environment variables the file names (`*_env`).
"""

from __future__ import annotations

import operator
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controltower.errors import ConfigError
from controltower.settings import parse_duration
from controltower.yamlfile import Located, load

DEFAULT_FILE = Path(__file__).with_name("alerts.yaml")

FIELDS = (
    "open_breaches",
    "oldest_breach_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "within_target_ratio",
    "burn_rate_short",
    "burn_rate_long",
    "error_budget_remaining",
    "value",
    "count",
    "health",
)
HEALTH_RANK = {"ok": 0, "warn": 1, "critical": 2}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES = ("page", "ticket", "info")
RECEIVER_TYPES = ("webhook", "slack", "pagerduty", "email", "log")
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"

# Every column of sla_status a summary template may name, plus the humanized extras.
ROW_FIELDS = (
    "sla", "channel", "window", "kind", "computed_at", "count", "p50_ms", "p95_ms", "p99_ms",
    "target_ms", "within_target_ratio", "open_breaches", "oldest_breach_ms", "value", "threshold",
    "health", "reason", "objective", "error_budget_remaining", "burn_rate_short", "burn_rate_long",
)
HUMAN_FIELDS = ("oldest_breach_ms", "p50_ms", "p95_ms", "p99_ms", "target_ms")
EXTRA_FIELDS = ("rule", "severity", "field", "op", "threshold_value", "dashboard_url")

_RULE_KEYS = {
    "name", "sla", "channel", "window", "field", "op", "value", "for", "severity", "labels",
    "annotations", "runbook_url", "repeat_interval", "receivers", "description",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Receiver:
    name: str
    type: str
    url: str | None = None
    url_env: str | None = None
    routing_key_env: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = 25
    sender: str | None = None
    to: tuple[str, ...] = ()
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout_seconds: float = 10.0

    def secrets(self, environ: Mapping[str, str]) -> list[str]:
        """The secret values this receiver uses (to keep them out of logs and stored errors)."""
        names = [self.url_env, self.routing_key_env, self.password_env]
        values = [environ.get(n or "", "") for n in names if n]
        if self.type == "slack" and self.url:
            values.append(self.url)
        return [v for v in values if v]


@dataclass(frozen=True)
class Rule:
    name: str
    sla: str
    field: str
    op: str
    value: float | str
    channel: str | None = None
    window: str = "1h"
    for_seconds: float = 0.0
    severity: str = "ticket"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runbook_url: str | None = None
    repeat_interval_seconds: float | None = None
    receivers: tuple[str, ...] = ()
    where: str = ""

    def matches(self, row: Mapping[str, Any]) -> bool:
        return (
            (self.sla == "*" or row["sla"] == self.sla)
            and (self.channel is None or row["channel"] == self.channel)
            and row["window"] == self.window
        )

    def observed(self, row: Mapping[str, Any]) -> Any:
        return row.get(self.field)

    def holds(self, row: Mapping[str, Any]) -> bool:
        """The condition on `row`; a missing (NULL) value never holds."""
        observed = row.get(self.field)
        if observed is None:
            return False
        if self.field == "health":
            left = HEALTH_RANK.get(str(observed))
            right = HEALTH_RANK[str(self.value)]
            return left is not None and OPS[self.op](left, right)
        return bool(OPS[self.op](float(observed), float(self.value)))

    def numeric(self, row: Mapping[str, Any]) -> float | None:
        """The observed value as a number for storage (health as its rank)."""
        observed = row.get(self.field)
        if observed is None:
            return None
        if self.field == "health":
            rank = HEALTH_RANK.get(str(observed))
            return float(rank) if rank is not None else None
        return float(observed)


@dataclass(frozen=True)
class RuleSet:
    source: str
    rules: tuple[Rule, ...]
    receivers: dict[str, Receiver]


def human_ms(ms: Any) -> str:
    """`5400000` -> `1h 30m`; `95000` -> `1m 35s`; None -> `n/a`."""
    if ms is None:
        return "n/a"
    seconds = int(round(float(ms) / 1000))
    if seconds < 60:
        return f"{float(ms) / 1000:.1f}s" if float(ms) < 10_000 else f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def template_fields(row: Mapping[str, Any], rule: Rule, dashboard_url: str = "") -> dict[str, Any]:
    values: dict[str, Any] = {name: row.get(name) for name in ROW_FIELDS}
    for name in HUMAN_FIELDS:
        values[name.removesuffix("_ms") + "_human"] = human_ms(row.get(name))
    values.update(
        rule=rule.name, severity=rule.severity, field=rule.field, op=rule.op,
        threshold_value=rule.value, dashboard_url=dashboard_url,
    )
    return {k: ("n/a" if v is None else v) for k, v in values.items()}


def render(template: str, values: Mapping[str, Any]) -> str:
    """Format `template` with `values`; a value that does not fit its format spec is shown as is."""
    try:
        return template.format_map(values)
    except (ValueError, TypeError):
        loose = {k: str(v) for k, v in values.items()}
        stripped = re.sub(r"\{(\w+)(![rsa])?:[^{}]*\}", r"{\1}", template)
        try:
            return stripped.format_map(loose)
        except (KeyError, ValueError, IndexError):
            return template


_SAMPLE_ROW = {name: 1 for name in ROW_FIELDS} | {
    "sla": "erp_posting", "channel": "amazon", "window": "1h", "kind": "milestone_latency",
    "health": "critical", "reason": "r", "computed_at": "2026-01-01T00:00:00Z",
}


def _check_template(doc: Located, text: Any, *path: Any) -> str:
    if not isinstance(text, str):
        raise doc.error("must be a string", *path)
    known = set(template_fields(_SAMPLE_ROW, Rule("r", "s", "value", ">", 0)))
    try:
        for _, name, _, _ in string.Formatter().parse(text):
            if name is None:
                continue
            base = re.split(r"[.\[]", name, maxsplit=1)[0]
            if base not in known:
                raise doc.error(
                    f"unknown field {{{name}}} in template (known: {', '.join(sorted(known))})", *path
                )
    except ValueError as exc:
        raise doc.error(f"template is not valid: {exc}", *path) from None
    return text


def _duration(doc: Located, raw: Any, *path: Any) -> float:
    key = path[-1]
    if isinstance(raw, bool) or raw is None:
        raise doc.error(f'{key}: "{raw}" is not a duration (expected e.g. 90s, 15m, 4h)', *path)
    try:
        return parse_duration(str(raw), where=str(key))
    except ConfigError as exc:
        raise doc.error(str(exc), *path) from None


def _str(doc: Located, raw: Any, *path: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise doc.error(f"{path[-1]}: expected a non-empty string, got {raw!r}", *path)
    return raw


def _str_map(doc: Located, raw: Any, *path: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise doc.error(f"{path[-1]}: expected a mapping of names to strings", *path)
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _LABEL.match(key):
            raise doc.error(f"{path[-1]}: {key!r} is not a valid name", *path, key)
        if isinstance(value, dict | tuple | list | bool) or value is None:
            raise doc.error(f"{path[-1]}.{key}: expected a string", *path, key)
        out[key] = str(value)
    return out


def _receiver(doc: Located, name: Any, raw: Any) -> Receiver:
    path = ("receivers", name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise doc.error(f"receiver name {name!r} is not valid", *path)
    if not isinstance(raw, dict):
        raise doc.error(f"receiver {name}: expected a mapping with a type", *path)
    kind = raw.get("type")
    if kind not in RECEIVER_TYPES:
        raise doc.error(
            f"receiver {name}: type {kind!r} is not one of {', '.join(RECEIVER_TYPES)}", *path, "type"
        )
    allowed = {
        "webhook": {"url", "url_env", "timeout"},
        "slack": {"url", "url_env", "timeout"},
        "pagerduty": {"url", "routing_key_env", "timeout"},
        "email": {"smtp_host", "smtp_port", "from", "to", "starttls", "username", "password_env", "timeout"},
        "log": set(),
    }[kind] | {"type"}
    for key in raw:
        if key not in allowed:
            hint = ""
            if key in {"routing_key", "password", "token"}:
                hint = f" (secrets are never written here: name an environment variable with {key}_env)"
            raise doc.error(
                f"receiver {name}: unknown field {key!r}{hint} (allowed: {', '.join(sorted(allowed))})",
                *path, key,
            )
    kw: dict[str, Any] = {"name": name, "type": kind}
    if "timeout" in raw:
        kw["timeout_seconds"] = _duration(doc, raw["timeout"], *path, "timeout")
    if kind in {"webhook", "slack"}:
        if ("url" in raw) == ("url_env" in raw):
            raise doc.error(f"receiver {name}: give exactly one of url or url_env", *path)
        if "url" in raw:
            url = _str(doc, raw["url"], *path, "url")
            if not url.startswith(("http://", "https://")):
                raise doc.error(f"receiver {name}: url must start with http:// or https://", *path, "url")
            kw["url"] = url
        else:
            kw["url_env"] = _str(doc, raw["url_env"], *path, "url_env")
    elif kind == "pagerduty":
        if "routing_key_env" not in raw:
            raise doc.error(f"receiver {name}: routing_key_env (an environment variable name) is required", *path)
        kw["routing_key_env"] = _str(doc, raw["routing_key_env"], *path, "routing_key_env")
        kw["url"] = _str(doc, raw.get("url", PAGERDUTY_URL), *path, "url")
    elif kind == "email":
        to = raw.get("to")
        if isinstance(to, str):
            to = (to,)
        if not to or not isinstance(to, list | tuple) or not all(isinstance(t, str) and "@" in t for t in to):
            raise doc.error(f"receiver {name}: to must be an address or a list of addresses", *path, "to")
        sender = raw.get("from")
        if not isinstance(sender, str) or "@" not in sender:
            raise doc.error(f"receiver {name}: from must be an email address", *path, "from")
        port = raw.get("smtp_port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise doc.error(f"receiver {name}: smtp_port must be a port number", *path, "smtp_port")
        starttls = raw.get("starttls", False)
        if not isinstance(starttls, bool):
            raise doc.error(f"receiver {name}: starttls must be true or false", *path, "starttls")
        kw.update(
            smtp_host=_str(doc, raw.get("smtp_host", "localhost"), *path, "smtp_host"),
            smtp_port=port, sender=sender, to=tuple(to), starttls=starttls,
            username=raw.get("username"),
            password_env=raw.get("password_env"),
        )
    return Receiver(**kw)


def _rule(doc: Located, i: int, raw: Any, receivers: dict[str, Receiver], defaults: tuple[str, ...]) -> Rule:
    path = ("rules", i)
    if not isinstance(raw, dict):
        raise doc.error("each rule must be a mapping", *path)
    for key in raw:
        if key not in _RULE_KEYS:
            raise doc.error(f"unknown field {key!r} (allowed: {', '.join(sorted(_RULE_KEYS))})", *path, key)
    for key in ("name", "sla", "field", "op", "value"):
        if key not in raw:
            raise doc.error(f"rule is missing {key!r}", *path)
    name = _str(doc, raw["name"], *path, "name")
    if not _NAME.match(name):
        raise doc.error(f"name {name!r}: use letters, digits, _ . : -", *path, "name")
    fld = raw["field"]
    if fld not in FIELDS:
        raise doc.error(f"field {fld!r} is not one of {', '.join(FIELDS)}", *path, "field")
    op = raw["op"]
    if op not in OPS:
        raise doc.error(f"op {op!r} is not one of {' '.join(OPS)}", *path, "op")
    value = raw["value"]
    if fld == "health":
        if value not in HEALTH_RANK:
            raise doc.error(f"value {value!r}: health is one of ok, warn, critical", *path, "value")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise doc.error(f"value {value!r}: {fld} is compared with a number", *path, "value")
    severity = raw.get("severity", "ticket")
    if severity not in SEVERITIES:
        raise doc.error(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}", *path, "severity")
    channel = raw.get("channel")
    if channel is not None:
        channel = _str(doc, channel, *path, "channel")
    window = _str(doc, raw.get("window", "1h"), *path, "window")
    for_seconds = _duration(doc, raw["for"], *path, "for") if "for" in raw else 0.0
    repeat = _duration(doc, raw["repeat_interval"], *path, "repeat_interval") if "repeat_interval" in raw else None
    if repeat is not None and repeat <= 0:
        raise doc.error("repeat_interval must be more than 0 (leave it out to never repeat)", *path, "repeat_interval")
    labels = _str_map(doc, raw.get("labels"), *path, "labels")
    for reserved in ("alertname", "sla", "channel", "window", "severity"):
        if reserved in labels:
            raise doc.error(f"labels: {reserved!r} is set by the evaluator", *path, "labels", reserved)
    annotations = _str_map(doc, raw.get("annotations"), *path, "annotations")
    for key, text in annotations.items():
        _check_template(doc, text, *path, "annotations", key)
    if "description" in raw:
        annotations.setdefault("description", _check_template(doc, raw["description"], *path, "description"))
    annotations.setdefault("summary", f"{{sla}} on {{channel}}: {fld} {op} {value} (now {{{fld}}})")
    runbook = raw.get("runbook_url")
    if runbook is not None:
        runbook = _str(doc, runbook, *path, "runbook_url")
        annotations["runbook_url"] = runbook
    names = raw.get("receivers")
    if names is None:
        names = defaults
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, list | tuple):
        raise doc.error("receivers: expected a list of receiver names", *path, "receivers")
    for j, rname in enumerate(names):
        if rname not in receivers:
            known = ", ".join(sorted(receivers)) or "none defined"
            raise doc.error(f"unknown receiver {rname!r} (defined: {known})", *path, "receivers", j)
    return Rule(
        name=name, sla=_str(doc, raw["sla"], *path, "sla"), field=fld, op=op, value=value,
        channel=channel, window=window, for_seconds=for_seconds, severity=severity, labels=labels,
        annotations=annotations, runbook_url=runbook, repeat_interval_seconds=repeat,
        receivers=tuple(names), where=doc.where(*path),
    )


def parse(doc: Located) -> RuleSet:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("expected a mapping with rules: (and optionally receivers:, default_receivers:)")
    for key in data:
        if key not in {"rules", "receivers", "default_receivers"}:
            raise doc.error(f"unknown top-level key {key!r} (rules, receivers, default_receivers)", key)
    raw_receivers = data.get("receivers") or {}
    if not isinstance(raw_receivers, dict):
        raise doc.error("receivers: expected a mapping of receiver names", "receivers")
    receivers = {name: _receiver(doc, name, raw) for name, raw in raw_receivers.items()}
    defaults = data.get("default_receivers") or ()
    if isinstance(defaults, str):
        defaults = (defaults,)
    if not isinstance(defaults, list | tuple):
        raise doc.error("default_receivers: expected a list of receiver names", "default_receivers")
    for j, rname in enumerate(defaults):
        if rname not in receivers:
            raise doc.error(f"unknown receiver {rname!r}", "default_receivers", j)
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list | tuple):
        raise doc.error("rules: expected a list of rules", "rules")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(raw_rules):
        rule = _rule(doc, i, raw, receivers, defaults)
        if rule.name in seen:
            raise doc.error(f"duplicate rule name {rule.name!r} (first at {seen[rule.name]})", "rules", i, "name")
        seen[rule.name] = rule.where
        rules.append(rule)
    return RuleSet(doc.source, tuple(rules), receivers)


def load_rules(path: Path | str | None = None) -> RuleSet:
    """Load and validate a rules file (the shipped defaults when `path` is None)."""
    return parse(load(path if path is not None else DEFAULT_FILE))
