"""Personal data masking, applied to every field of every event before it is stored.

What is masked (see docs/security.md, "Personal data"):
- **by key**: a value under a key that names personal data (`buyer_email`, `phone`,
  `ship_to_name`, `card_number`, `iban`, `shipping_address`, ...; see `maskrules`) is masked
  whatever it looks like; containers under an address key have every string leaf masked
  except coarse location fields (city, state, country, postal-code prefix). Key/value arrays
  (`[{"name": "phone", "value": "…"}]`, OTLP `{"key": …, "value": …}`) mask the value by
  the name they carry.
- **by value**, everywhere: emails (also URL-encoded, full-width, with zero-width characters,
  and as object keys), payment cards (Luhn) and IBANs (mod 97). In free text (`error_message`,
  values under message/note/comment keys) also phones, names after a cue word and street
  addresses. Phones are not looked for elsewhere: marketplace order numbers such as Amazon's
  `113-4567890-1234567` look like phone numbers and must stay searchable.
- **identifiers** (`event_id`, `correlation_id`, `order_id`, `error_code`, id-like attribute
  values, object keys) keep their shape: personal data inside becomes a keyed-hash token
  (`email-3fa9c1d2e4b5`), so they still correlate and never collide, and the clear value is
  never indexed as a search key.

The same walk enforces `limits` (depth, numbers) and rejects the record naming the field: it
is the one pass over every value before storage.
"""

from __future__ import annotations

import re
from typing import Any

from controltower import limits
from controltower.errors import EventError
from controltower.event import Event
from controltower.maskrules import ADDRESS_KEEP, POSTAL_KEYS, MaskingRules, normalise_key
from controltower.pii import (
    EMAIL_RE,
    Finder,
    clean,
    mask_by_kind,
    mask_email,
    mask_name,
    mask_phone,
)

__all__ = ["EMAIL_RE", "Masker", "MaskingRules", "mask_email", "mask_name", "mask_phone", "normalise_key"]

_ID_KEY = re.compile(r"(^|_)(id|ids|uuid|guid|number|no|num|ref|reference|code|key|document|doc|rma|sku|tracking|awb|po|asin|upc|ean|gtin|isbn)$")
_TEXT_KEY = re.compile(r"(^|_)(message|msg|messages|text|note|notes|comment|comments|description|desc|reason|detail|details|remark|remarks|instructions|body|summary|error|errors|log|status_message|gift_message)$")
# normalised spellings (`fieldName` → field_name); matched through the key cache, so any case,
# separator or camelCase spelling of these counts
_KV_NAME_KEYS = frozenset({"name", "key", "field", "label", "attribute", "property", "k",
                           "field_name", "attribute_name", "key_name", "property_name", "param_name"})
_KV_VALUE_KEYS = frozenset({"value", "val", "values", "text", "data", "v", "field_value",
                            "attribute_value", "string_value", "property_value", "param_value"})
_TOO_DEEP = f"nested deeper than {limits.MAX_DEPTH} levels"
_CACHE_LIMIT = 10_000  # keys come from senders: bound what is remembered about them


class _Problem(Exception):
    """A value breaks a limit; `path` is filled in on the way out of the walk."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[Any] = []


class Masker:
    """Masks one event in place (every field); returns how many values changed."""

    def __init__(self, rules: MaskingRules | None = None) -> None:
        self.rules = rules or MaskingRules.defaults()
        self.find = Finder(self.rules.hash_key, emails=self.rules.mask_emails_in_text)
        self._keys: dict[str, tuple[str | None, bool, bool, str, str]] = {}
        # keys whose clean string values are stored as they are: no kind, not free text, the key
        # itself stored unchanged, and not the name or value of a key/value pair
        self._plain: set[str] = set()

    def _key(self, key: str) -> tuple[str | None, bool, bool, str, str]:
        """(kind, is an identifier, is free text, normalised, as stored) for a key, cached."""
        known = self._keys.get(key)
        if known is not None:
            return known
        norm = normalise_key(key)
        found = (self.rules.kind_of(key), bool(_ID_KEY.search(norm)), bool(_TEXT_KEY.search(norm)), norm,
                 self.find.identifier(key))
        if len(self._keys) < _CACHE_LIMIT:
            self._keys[key] = found
            if found[0] is None and not found[2] and found[4] == key and norm not in _KV_NAME_KEYS \
                    and norm not in _KV_VALUE_KEYS:
                self._plain.add(key)
        return found

    def mask_identifier(self, text: str) -> str:
        """How an identifier carrying personal data is stored: search with this, not the clear value."""
        return self.find.identifier(text)

    def mask_event(self, event: Event) -> int:
        changed = 0
        for name in ("event_id", "correlation_id", "order_id", "error_code"):
            value = getattr(event, name)
            if value and not (value.isascii() and clean(value)):
                masked = self.find.identifier(value)
                if masked is not value:
                    setattr(event, name, masked)
                    changed += 1
        if event.error_message:
            masked = self.find.value(event.error_message, free_text=True)
            if masked is not event.error_message:
                event.error_message = masked
                changed += 1
        for name in ("attributes", "payload"):
            value = getattr(event, name)
            if value is None:
                continue
            try:
                masked, n = self.mask_value(value, None)
            except _Problem as problem:
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{str(p)[:40]}" for p in problem.path)
                if problem.message == _TOO_DEEP:
                    where = ""  # the path would be as long as the nesting
                raise EventError(f"{name}{where}: {problem.message}") from None
            setattr(event, name, masked)
            changed += n
        return changed

    def mask_value(self, value: Any, kind: str | None, *, in_address: bool = False, depth: int = 0,
                   identifier: bool = False, free_text: bool = False) -> tuple[Any, int]:
        if type(value) is str:
            if kind is None and not in_address and not free_text and value.isascii() and clean(value):
                return value, 0  # the common case: nothing that could be personal data
            if kind is not None or in_address:
                masked = mask_by_kind(kind or "address", value) if value else value
                return masked, int(masked != value)
            if identifier:
                masked = self.find.identifier(value)
            else:
                masked = self.find.value(value, free_text=free_text)
            return masked, int(masked is not value)
        if isinstance(value, dict):
            return self._mask_dict(value, kind, in_address, depth)
        if isinstance(value, list):
            if depth >= limits.MAX_DEPTH:
                raise _Problem(_TOO_DEEP)
            changed = 0
            items = []
            for index, item in enumerate(value):
                try:
                    masked, n = self.mask_value(item, kind, in_address=in_address, depth=depth + 1,
                                                identifier=identifier, free_text=free_text)
                except _Problem as problem:
                    problem.path.insert(0, index)
                    raise
                items.append(masked)
                changed += n
            return items, changed
        if isinstance(value, int | float) and not isinstance(value, bool):
            problem = limits.number_problem(value)
            if problem:
                raise _Problem(problem)
            if kind in ("phone", "card", "bank", "national_id", "birth", "secret") or (kind is None and not identifier and isinstance(value, int) and value >= 10**11):
                text = str(value)
                masked = mask_by_kind(kind, text) if kind else self.find.value(text)
                return (masked, 1) if masked != text else (value, 0)
        return value, 0

    def _mask_dict(self, value: dict[Any, Any], kind: str | None, in_address: bool, depth: int) -> tuple[Any, int]:
        if depth >= limits.MAX_DEPTH:
            raise _Problem(_TOO_DEEP)
        if kind is None and not in_address and self._plain.issuperset(value):
            # the common case: known plain keys over clean ASCII strings, kept as they are (no copy,
            # no key/value-pair test: a plain key is neither a pair's name nor its value)
            for item in value.values():
                if not (type(item) is str and item.isascii() and clean(item)):
                    break
            else:
                return value, 0
        pair_kind = self._pair_kind(value) if len(value) <= 6 else None
        plain = kind is None and not in_address and pair_kind is None
        keys = self._keys
        changed = 0
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if plain and type(item) is str and type(key) is str:
                known = keys.get(key)
                # the common case: a known harmless key over a short ASCII value without PII
                if known is not None and known[0] is None and not known[2] and known[4] is key \
                        and item.isascii() and clean(item):
                    out[key] = item
                    continue
            try:
                if isinstance(key, str):
                    key_kind, key_is_id, key_is_text, norm, stored_key = keys.get(key) or self._key(key)
                    if stored_key is not key:
                        changed += 1
                else:
                    key_kind, key_is_id, key_is_text, norm, stored_key = None, False, False, "", key
                if pair_kind is not None and norm in _KV_NAME_KEYS and isinstance(item, str):
                    out[stored_key] = masked_label = self.find.identifier(item)  # a label, see _pair_kind
                    changed += masked_label is not item
                    continue
                if pair_kind and norm in _KV_VALUE_KEYS:
                    key_kind = pair_kind
                if in_address and ADDRESS_KEEP.match(norm):
                    if norm in POSTAL_KEYS and isinstance(item, str) and len(item) > 3:
                        out[stored_key] = item[:3] + "***"
                        changed += 1
                    else:
                        out[stored_key] = item
                    continue
                child_kind = key_kind or (kind if kind != "address" else None)
                out[stored_key], n = self.mask_value(
                    item, child_kind, depth=depth + 1, identifier=key_is_id and key_kind is None,
                    free_text=key_is_text, in_address=in_address or key_kind == "address" or kind == "address",
                )
                changed += n
            except _Problem as problem:
                problem.path.insert(0, key)
                raise
        return out, changed

    def _pair_kind(self, value: dict[Any, Any]) -> str | None:
        """For a key/value pair object (`{"name": "phone", "value": …}`, OTLP `{"key": …}`):
        the kind its name says ("" when none); None when `value` is not such a pair.

        The name of a pair is a label, not a person: it stays readable (emails inside it still
        become tokens), and the value is masked by what the label says it is.
        """
        if len(value) > 3 or not any(type(key) is str and self._key(key)[3] in _KV_VALUE_KEYS for key in value):
            return None
        label = None
        for key, item in value.items():
            if isinstance(key, str) and isinstance(item, str) and len(item) <= 64 and self._key(key)[3] in _KV_NAME_KEYS:
                label = item
        if label is None:
            return None
        return self._key(label)[0] or ""
