"""Annotation templates: the fields a summary may name, their values for one SLA row, rendering.

Templates are Python `str.format` strings over a row of `sla_status` (plus the derived volume
fields), durations in words (`oldest_breach_human`, in the shared wording of
`controltower.vocab.human_duration`) and the rule's own fields. `check_template` validates one at
load time with a `file:line` error; `render` never raises at evaluation time.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from controltower.vocab import human_duration
from controltower.yamlfile import Located

# Every column of sla_status a summary template may name, the derived fields, plus the humanized extras.
ROW_FIELDS = (
    "sla", "channel", "window", "kind", "computed_at", "count", "p50_ms", "p95_ms", "p99_ms",
    "target_ms", "within_target_ratio", "open_breaches", "oldest_breach_ms", "value", "threshold",
    "health", "reason", "objective", "error_budget_remaining", "burn_rate_short", "burn_rate_long",
    "volume_ratio", "volume_last_hour", "volume_usual",
)
HUMAN_FIELDS = ("oldest_breach_ms", "p50_ms", "p95_ms", "p99_ms", "target_ms")
EXTRA_FIELDS = ("rule", "severity", "field", "op", "threshold_value", "dashboard_url")
KNOWN = frozenset((*ROW_FIELDS, *(n.removesuffix("_ms") + "_human" for n in HUMAN_FIELDS), *EXTRA_FIELDS))


def human_ms(ms: Any) -> str:
    """A duration in milliseconds in words (`5400000` -> `1 h 30 min`); missing -> `n/a`."""
    return "n/a" if ms is None else human_duration(ms).replace("–", "n/a")


def template_fields(row: Mapping[str, Any], rule: Any, dashboard_url: str = "") -> dict[str, Any]:
    """The values a template of `rule` (an `alerts.rules.Rule`) sees for `row`; missing -> `n/a`."""
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
    except (ValueError, TypeError, OverflowError):
        loose = {k: str(v) for k, v in values.items()}
        stripped = re.sub(r"\{(\w+)(![rsa])?:[^{}]*\}", r"{\1}", template)
        try:
            return stripped.format_map(loose)
        except (KeyError, ValueError, IndexError):
            return template


def check_template(doc: Located, text: Any, *path: Any) -> str:
    """`text` if it is a template naming only known fields, else a `file:line` ConfigError."""
    if not isinstance(text, str):
        raise doc.error("must be a string", *path)
    try:
        for _, name, _, _ in string.Formatter().parse(text):
            if name is None:
                continue
            base = re.split(r"[.\[]", name, maxsplit=1)[0]
            if base not in KNOWN:
                raise doc.error(
                    f"unknown field {{{name}}} in template (known: {', '.join(sorted(KNOWN))})", *path
                )
    except ValueError as exc:
        raise doc.error(f"template is not valid: {exc}", *path) from None
    return text
