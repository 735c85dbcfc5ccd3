"""The declarative field mapping of a tap: a broker's own JSON message -> one canonical record. Pure.

A mapping names, per canonical field, where its value comes from (taps.yaml `mapping:`):
- `order.ref`: a JSON path, dot-separated; a segment of digits indexes a list (`lines.0.sku`);
  `$` is the whole message (for `payload`);
- `{const: amazon}`: a constant;
- `{path: status, map: {POSTED: ok, FAILED: error}, default: ok}`: a looked-up value, with a
  default when the path is missing or its value is not in `map` (without a default an unmapped
  value is kept as it is, so the store names it when it is not valid).
`attributes:` is a mapping of attribute name -> any of the above. A field whose source is
missing is left out (the store then says what is required). Compiling checks the YAML and
names `file:line`; applying never touches I/O and raises `MappingError` for a message that
cannot become a record (no correlation_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controltower.errors import ControlTowerError
from controltower.event import FIELDS
from controltower.yamlfile import Located

MAPPABLE = tuple(f for f in FIELDS if f != "attributes")  # attributes: a mapping of rules of its own
REQUIRED = ("correlation_id", "occurred_at")  # without them no message could ever be stored
_MISSING = object()
WHOLE = "$"


class MappingError(ControlTowerError):
    """A message the mapping cannot turn into a canonical record (the reason goes to quarantine)."""


@dataclass(frozen=True)
class Rule:
    path: tuple[str, ...] | None = None  # None: a constant; (): the whole message
    const: Any = None
    lookup: dict[Any, Any] | None = None
    default: Any = _MISSING

    def value(self, message: Any) -> Any:
        if self.path is None:
            return self.const
        found = _get(message, self.path)
        if self.lookup is not None and found is not _MISSING:
            key = found if isinstance(found, str | int | bool) or found is None else _MISSING
            if key is not _MISSING and key in self.lookup:
                return self.lookup[key]
            return self.default if self.default is not _MISSING else found
        return self.default if found is _MISSING else found


@dataclass(frozen=True)
class Mapping:
    fields: tuple[tuple[str, Rule], ...]
    attributes: tuple[tuple[str, Rule], ...] = ()

    def apply(self, message: Any) -> dict[str, Any]:
        """The canonical record for one decoded message; MappingError when it has no correlation_id."""
        if not isinstance(message, dict):
            raise MappingError(f"mapped message: expected a JSON object, got {_kind(message)}")
        record: dict[str, Any] = {}
        for name, rule in self.fields:
            value = rule.value(message)
            if value is not _MISSING and value is not None:
                record[name] = value
        attributes: dict[str, Any] = {}
        for name, rule in self.attributes:
            value = rule.value(message)
            if value is not _MISSING and value is not None:
                attributes[name] = value
        if attributes:
            record["attributes"] = attributes
        cid = record.get("correlation_id")
        if cid is None or cid == "":
            raise MappingError("mapping found no correlation_id in the message")
        if isinstance(cid, int) and not isinstance(cid, bool):
            record["correlation_id"] = str(cid)  # a numeric order reference is still an id
        return record


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _path(text: Any, doc: Located, *where: Any) -> tuple[str, ...]:
    if not isinstance(text, str) or not text.strip():
        raise doc.error(f"expected a JSON path such as order.ref, got {text!r}", *where)
    if text.strip() == WHOLE:
        return ()
    segments = tuple(text.strip().split("."))
    if any(not s for s in segments):
        raise doc.error(f'"{text}" is not a JSON path (empty segment; expected e.g. order.lines.0.sku)', *where)
    return segments


def _rule(spec: Any, doc: Located, *where: Any) -> Rule:
    if isinstance(spec, str):
        return Rule(path=_path(spec, doc, *where))
    if not isinstance(spec, dict):
        raise doc.error(f"expected a JSON path, {{const: value}} or {{path: …, map: {{…}}}}, got {spec!r}", *where)
    unknown = set(spec) - {"const", "path", "map", "default"}
    if unknown:
        raise doc.error(f"unknown key {sorted(map(str, unknown))[0]!r} (expected const, path, map, default)", *where)
    if "const" in spec:
        if len(spec) > 1:
            raise doc.error("const takes no path, map or default", *where)
        return Rule(const=spec["const"])
    if "path" not in spec:
        raise doc.error("a rule needs path: or const:", *where)
    lookup = spec.get("map")
    if lookup is not None and not isinstance(lookup, dict):
        raise doc.error(f"map: expected a mapping of message value -> canonical value, got {lookup!r}", *where, "map")
    return Rule(path=_path(spec["path"], doc, *where, "path"), lookup=dict(lookup) if lookup is not None else None,
                default=spec.get("default", _MISSING))


def compile_mapping(spec: Any, doc: Located, *where: Any) -> Mapping:
    """The mapping at `where` in a loaded taps.yaml; ConfigError naming file:line when wrong."""
    if not isinstance(spec, dict) or not spec:
        raise doc.error("mapping: expected canonical field -> JSON path or rule", *where)
    fields: list[tuple[str, Rule]] = []
    attributes: list[tuple[str, Rule]] = []
    for name, rule in spec.items():
        if name == "attributes":
            if not isinstance(rule, dict):
                raise doc.error("attributes: expected attribute name -> JSON path or rule", *where, name)
            attributes += [(str(k), _rule(v, doc, *where, name, k)) for k, v in rule.items()]
        elif name in MAPPABLE:
            fields.append((name, _rule(rule, doc, *where, name)))
        else:
            raise doc.error(f"{name!r} is not a canonical field (expected one of {', '.join(FIELDS)})", *where, name)
    missing = [f for f in REQUIRED if f not in spec]
    if missing:
        raise doc.error(f"mapping: {missing[0]} is required (every event needs it)", *where)
    return Mapping(tuple(fields), tuple(attributes))
