"""Value limits every stored record obeys: nesting depth and numbers that survive storage.

Pure. Record parsing (`bodies`, `files`, `spans`) and the masking walk use these to reject one
record with a reason naming the field, instead of failing a batch or storing a value changed
(a JSON `1e400` read as infinity and written as null, a 30-digit integer rounded).

Decision: numbers are kept exactly or rejected. An integer or float whose magnitude is 2^63 or
more, or that is not finite, rejects its record ("send it as a string"); amounts and counts in
integration events never need more, and a value that cannot round-trip is worse than a clear
rejection the sender can act on.
"""

from __future__ import annotations

import math
from typing import Any

from controltower.errors import EventError

MAX_DEPTH = 32  # levels of objects/arrays inside `attributes` or `payload`
MAX_MAGNITUDE = 2**63


def too_deep(field: str) -> EventError:
    return EventError(f"{field}: nested deeper than {MAX_DEPTH} levels")


def number_problem(value: int | float) -> str | None:
    """Why a JSON number cannot be stored exactly, or None when it can."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"number {value} is not finite"
        if abs(value) >= MAX_MAGNITUDE:
            return f"number {value:g} is outside ±2^63 and would lose digits; send it as a string"
        return None
    if -MAX_MAGNITUDE <= value < MAX_MAGNITUDE:
        return None
    digits = len(str(abs(value))) if value.bit_length() < 14_000 else "thousands of"
    return f"integer of {digits} digits is outside the 64-bit range; send it as a string"


def path(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    text = str(key)
    return f"{parent}.{text[:40]}" if parent else text[:40]


def check(value: Any, field: str, depth: int = 0) -> None:
    """Raise EventError naming the first place where `value` breaks a limit."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise too_deep(field.split(".")[0].split("[")[0])
        for key, item in value.items():
            if type(item) in (dict, list, int, float):
                check(item, path(field, key), depth + 1)
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise too_deep(field.split(".")[0].split("[")[0])
        for index, item in enumerate(value):
            if type(item) in (dict, list, int, float):
                check(item, path(field, index), depth + 1)
    elif isinstance(value, int | float):
        problem = number_problem(value)
        if problem:
            raise EventError(f"{field}: {problem}")
