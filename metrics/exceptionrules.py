"""The exception work queue's configuration (`exceptions.yaml`) and classification. Pure.

`load(path)` reads and checks the file (errors name `file:line`); `classify(rules, ...)` gives a
failure its class from the first matching rule, `unknown` when none does. The grouping job
(`metrics.exceptions`) classifies each new group once; nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from controltower import yamlfile

CLASSES = ("connection", "timeout", "rate_limit", "auth", "validation", "mapping", "duplicate", "business_rule",
           "unknown")
SOURCES = ("error", "dead_letter", "breach", "orphan")
SIGNALS = ("error_code", "message")  # any listed code or phrase matches
SCOPES = ("source", "channel", "milestone")  # every one given must hold
DEFAULT_QUIET_MINUTES = 60
MAX_QUIET_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class Rule:
    cls: str
    error_codes: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()
    sources: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    milestones: frozenset[str] = frozenset()

    def matches(self, *, error_code: str, message: str, source: str, channel: str, milestone: str) -> bool:
        for allowed, value in ((self.sources, source), (self.channels, channel), (self.milestones, milestone)):
            if allowed and value not in allowed:
                return False
        if not self.error_codes and not self.phrases:
            return True
        return error_code in self.error_codes or any(p in message for p in self.phrases)


@dataclass(frozen=True)
class ExceptionRules:
    rules: tuple[Rule, ...]
    quiet_minutes: int = DEFAULT_QUIET_MINUTES
    source: str = "<defaults>"


def default_path() -> Path:
    return Path(str(resources.files("metrics") / "exceptions.yaml"))


def load(path: Path | str | None = None) -> ExceptionRules:
    """The rules of `path` (None: the shipped defaults); `ConfigError` naming file:line otherwise."""
    return parse(yamlfile.load(path or default_path()))


def parse(doc: yamlfile.Located) -> ExceptionRules:
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise doc.error("expected a mapping with `rules` (and optionally `quiet_minutes`)")
    for key in data:
        if key not in ("rules", "quiet_minutes"):
            raise doc.error(f"unknown key {key!r} (expected rules, quiet_minutes)", key)
    quiet = data.get("quiet_minutes", DEFAULT_QUIET_MINUTES)
    if isinstance(quiet, bool) or not isinstance(quiet, int) or not 1 <= quiet <= MAX_QUIET_MINUTES:
        raise doc.error(f"quiet_minutes: {quiet!r} is not a whole number of minutes from 1 to {MAX_QUIET_MINUTES}",
                        "quiet_minutes")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise doc.error("rules: expected a list of {class, match}", "rules")
    rules = tuple(_rule(doc, raw, i) for i, raw in enumerate(raw_rules))
    return ExceptionRules(rules=rules, quiet_minutes=quiet, source=doc.source)


def _rule(doc: yamlfile.Located, raw: Any, i: int) -> Rule:
    where = ("rules", i)
    if not isinstance(raw, dict):
        raise doc.error("a rule must be a mapping with class and match", *where)
    for key in raw:
        if key not in ("class", "match"):
            raise doc.error(f"unknown key {key!r} (expected class, match)", *where, key)
    cls = raw.get("class")
    if cls not in CLASSES:
        raise doc.error(f"class: {cls!r} is not one of {', '.join(CLASSES)}", *where, "class")
    match = raw.get("match")
    if not isinstance(match, dict) or not match:
        raise doc.error(f"match: expected a mapping with at least one of {', '.join(SIGNALS + SCOPES)}", *where, "match")
    lists: dict[str, tuple[str, ...]] = {}
    for key, value in match.items():
        if key not in SIGNALS + SCOPES:
            raise doc.error(f"match: unknown key {key!r} (expected {', '.join(SIGNALS + SCOPES)})", *where, "match", key)
        items = value if isinstance(value, list) else [value]
        if not items or any(isinstance(v, bool | dict | list) or v is None or str(v).strip() == "" for v in items):
            raise doc.error(f"match.{key}: expected a non-empty list of texts", *where, "match", key)
        lists[key] = tuple(str(v).strip() for v in items)
    bad = [s for s in lists.get("source", ()) if s not in SOURCES]
    if bad:
        raise doc.error(f"match.source: {bad[0]!r} is not one of {', '.join(SOURCES)}", *where, "match", "source")
    return Rule(
        cls=cls,
        error_codes=frozenset(c.lower() for c in lists.get("error_code", ())),
        phrases=tuple(p.lower() for p in lists.get("message", ())),
        sources=frozenset(lists.get("source", ())),
        channels=frozenset(lists.get("channel", ())),
        milestones=frozenset(lists.get("milestone", ())),
    )


def classify(rules: ExceptionRules, *, error_code: str | None, message: str | None, source: str,
             channel: str = "", milestone: str = "") -> str:
    """The class of the first rule that matches (error codes exact, phrases contained, both
    case-insensitive), else `unknown`."""
    code, text = (error_code or "").strip().lower(), (message or "").lower()
    for rule in rules.rules:
        if rule.matches(error_code=code, message=text, source=source, channel=channel, milestone=milestone):
            return rule.cls
    return "unknown"
