"""Rule conditions: the fields a rule may compare, the operators, and one validated condition.

A condition compares one field of an `sla_status` row (or a derived field, `alerts.derived`)
with a finite number, or `health` with a health rank (`controltower.vocab.HEALTH_RANK`). A
missing (NULL) value never holds. `parse_condition` validates one with `file:line` errors.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controltower.vocab import HEALTH_RANK
from controltower.yamlfile import Located

# Derived fields the evaluator adds to every row (see alerts.derived): not columns of sla_status.
DERIVED_FIELDS = ("volume_ratio",)
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
    *DERIVED_FIELDS,
)
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: float | str

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


def finite(value: float) -> bool:
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= 1e300
    except OverflowError:  # an integer too large for a float
        return False


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}… ({len(text)} characters)"


def parse_condition(doc: Located, raw: Any, *path: Any) -> Condition:
    if not isinstance(raw, dict):
        raise doc.error("expected a mapping with field, op and value", *path)
    for key in raw:
        if key not in {"field", "op", "value"}:
            raise doc.error(f"unknown field {key!r} in a condition (field, op, value)", *path, key)
    for key in ("field", "op", "value"):
        if key not in raw:
            raise doc.error(f"condition is missing {key!r}", *path)
    fld = raw["field"]
    if not isinstance(fld, str) or fld not in FIELDS:
        raise doc.error(f"field {short(fld)} is not one of {', '.join(FIELDS)}", *path, "field")
    op = raw["op"]
    if not isinstance(op, str) or op not in OPS:
        raise doc.error(f"op {short(op)} is not one of {' '.join(OPS)}", *path, "op")
    value = raw["value"]
    if fld == "health":
        if not isinstance(value, str) or value not in HEALTH_RANK:
            raise doc.error(f"value {short(value)}: health is one of ok, warn, critical", *path, "value")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise doc.error(f"value {short(value)}: {fld} is compared with a number", *path, "value")
    elif not finite(value):
        raise doc.error(f"value {short(value)}: expected a finite number (at most 1e300)", *path, "value")
    return Condition(fld, op, value)
