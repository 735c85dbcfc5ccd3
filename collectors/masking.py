"""Personal data masking, applied to every event before it is stored.

Two kinds of rule:
- **by key**: a value under a key that names personal data (`buyer_email`, `phone`,
  `ship_to_name`, `shipping_address`, ...) is masked whatever it looks like; containers
  under an address key have every string leaf masked except coarse location fields (city,
  state, country, postal-code prefix) that ops need to route a parcel question.
- **by value**: email addresses are recognised anywhere in any string (they are
  unambiguous); phone numbers only under keys, because marketplace order numbers such as
  Amazon's `113-4567890-1234567` look like phone numbers and must stay searchable.

The built-in rules cover the common marketplace payload shapes; a YAML file
(`CONTROLTOWER_MASKING_RULES`) replaces the key lists:

```yaml
email: [email, e_mail]          # regexes matched against the normalised key
phone: [phone, mobile, fax]
name: ['^(first|last|full|buyer|customer|recipient)_?name$']
address: [address, street]
keep: [sku_name, product_name]  # keys never masked
mask_emails_in_text: true
```

Keys are normalised (lower case, camelCase split, `-`/spaces → `_`) before matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controltower import yamlfile
from controltower.event import Event

EMAIL_RE = re.compile(r"(?<![\w.+-])([\w.+-]+)@([\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,})")

DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "email": (r"e_?mail",),
    "phone": (r"phone", r"mobile", r"^tel$", r"telephone", r"^fax", r"msisdn"),
    "name": (
        r"^(first|last|full|given|family|middle|buyer|customer|recipient|contact|ship_to|bill_to|shipto|billto|sold_to|consignee|cardholder|card_holder|account_holder|receiver|sender)_?name$",
        r"^(name|surname|forename)$",
        r"^(buyer|customer|recipient|consignee|receiver)$",
    ),
    "address": (r"address", r"^street", r"^addr", r"^line_?[123]$", r"^ship_to$", r"^bill_to$", r"^house_?(number|no)?$"),
}
DEFAULT_KEEP: tuple[str, ...] = (
    r"^(sku|product|item|channel|location|store|warehouse|carrier|service|marketplace|seller|shop|file|event|stage|flow|system|host|queue|topic|company|brand|category)_?name$",
    r"^email_(sent|status|template|type|count)$",
    r"ip_?address",
    r"^(mac|queue|endpoint|web|url)_?address$",
)
# Inside an address container these stay readable (coarse location, not a person).
ADDRESS_KEEP = re.compile(r"^(city|town|state|state_or_region|region|province|county|country|country_code|countrycode|postal_code|postalcode|zip|zip_code|zipcode|type|is_residential|address_type)$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalise_key(key: str) -> str:
    return re.sub(r"[\s\-.]+", "_", _CAMEL.sub("_", key)).lower()


@dataclass(frozen=True)
class MaskingRules:
    email: tuple[re.Pattern[str], ...]
    phone: tuple[re.Pattern[str], ...]
    name: tuple[re.Pattern[str], ...]
    address: tuple[re.Pattern[str], ...]
    keep: tuple[re.Pattern[str], ...]
    mask_emails_in_text: bool = True

    @classmethod
    def defaults(cls) -> MaskingRules:
        compiled = {kind: tuple(re.compile(p) for p in patterns) for kind, patterns in DEFAULT_KEYS.items()}
        return cls(keep=tuple(re.compile(p) for p in DEFAULT_KEEP), **compiled)

    @classmethod
    def load(cls, path: Path | str | None) -> MaskingRules:
        if path is None:
            return cls.defaults()
        doc = yamlfile.load(path)
        if not isinstance(doc.data, dict):
            raise doc.error("masking rules must be a mapping of email/phone/name/address/keep to lists of key patterns")
        known = {"email", "phone", "name", "address", "keep", "mask_emails_in_text"}
        for key in doc.data:
            if key not in known:
                raise doc.error(f"unknown key {key!r}; expected one of {', '.join(sorted(known))}", key)
        lists: dict[str, tuple[re.Pattern[str], ...]] = {}
        for kind in ("email", "phone", "name", "address", "keep"):
            patterns = doc.data.get(kind, DEFAULT_KEYS.get(kind, DEFAULT_KEEP) if kind != "keep" else DEFAULT_KEEP)
            if isinstance(patterns, str) or not isinstance(patterns, list | tuple):
                raise doc.error(f"{kind}: expected a list of regular expressions", kind)
            compiled = []
            for i, pattern in enumerate(patterns):
                if not isinstance(pattern, str):
                    raise doc.error(f"{kind}[{i}]: expected a string, got {type(pattern).__name__}", kind, i)
                try:
                    compiled.append(re.compile(pattern))
                except re.error as exc:
                    raise doc.error(f"{kind}[{i}]: bad regular expression {pattern!r}: {exc}", kind, i) from None
            lists[kind] = tuple(compiled)
        flag = doc.data.get("mask_emails_in_text", True)
        if not isinstance(flag, bool):
            raise doc.error("mask_emails_in_text: expected true or false", "mask_emails_in_text")
        return cls(mask_emails_in_text=flag, **lists)

    def kind_of(self, key: str) -> str | None:
        norm = normalise_key(key)
        if any(p.search(norm) for p in self.keep):
            return None
        for kind in ("email", "phone", "address", "name"):
            if any(p.search(norm) for p in getattr(self, kind)):
                return kind
        return None


def mask_email(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        local, domain = match.group(1), match.group(2)
        tld = domain.rsplit(".", 1)[-1]
        return f"{local[:1]}***@***.{tld}"

    masked = EMAIL_RE.sub(one, value)
    return masked if masked != value else "***"


def mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"***{digits[-2:]}" if len(digits) >= 6 else "***"


def mask_name(value: str) -> str:
    return " ".join(f"{part[:1]}***" for part in value.split()) or "***"


def mask_text(kind: str, value: str) -> str:
    if kind == "email":
        return mask_email(value)
    if kind == "phone":
        return mask_phone(value)
    if kind == "name":
        return mask_name(value)
    return "***"


class Masker:
    """Masks one event's `attributes` and `payload` in place; returns how many values changed."""

    def __init__(self, rules: MaskingRules | None = None) -> None:
        self.rules = rules or MaskingRules.defaults()
        self._kinds: dict[str, str | None] = {}

    def _kind(self, key: str) -> str | None:
        if key in self._kinds:
            return self._kinds[key]
        kind = self.rules.kind_of(key)
        if len(self._kinds) < 10_000:  # bounded: keys come from senders
            self._kinds[key] = kind
        return kind

    def mask_event(self, event: Event) -> int:
        changed = 0
        if event.attributes:
            event.attributes, n = self.mask_value(event.attributes, None)
            changed += n
        if event.payload is not None:
            event.payload, n = self.mask_value(event.payload, None)
            changed += n
        if event.error_message and self.rules.mask_emails_in_text and "@" in event.error_message:
            masked = EMAIL_RE.sub(lambda m: mask_email(m.group(0)), event.error_message)
            if masked != event.error_message:
                event.error_message = masked
                changed += 1
        return changed

    def mask_value(self, value: Any, kind: str | None, *, in_address: bool = False) -> tuple[Any, int]:
        if isinstance(value, dict):
            changed = 0
            out: dict[str, Any] = {}
            for key, item in value.items():
                key_kind = self._kind(key) if isinstance(key, str) else None
                if in_address and isinstance(key, str) and ADDRESS_KEEP.match(normalise_key(key)):
                    if normalise_key(key) in {"postal_code", "postalcode", "zip", "zip_code", "zipcode"} and isinstance(item, str) and len(item) > 3:
                        out[key] = item[:3] + "***"
                        changed += 1
                    else:
                        out[key] = item
                    continue
                child_kind = key_kind or (kind if kind != "address" else None)
                out[key], n = self.mask_value(item, child_kind, in_address=in_address or key_kind == "address" or kind == "address")
                changed += n
            return out, changed
        if isinstance(value, list):
            changed = 0
            items = []
            for item in value:
                masked, n = self.mask_value(item, kind, in_address=in_address)
                items.append(masked)
                changed += n
            return items, changed
        if isinstance(value, str):
            if kind is not None or in_address:
                masked = mask_text(kind or "address", value) if value else value
                return masked, int(masked != value)
            if self.rules.mask_emails_in_text and "@" in value:
                masked = EMAIL_RE.sub(lambda m: mask_email(m.group(0)), value)
                return masked, int(masked != value)
            return value, 0
        if isinstance(value, int | float) and not isinstance(value, bool) and kind == "phone":
            return mask_phone(str(value)), 1
        return value, 0
