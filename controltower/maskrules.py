"""Which keys name personal data: key normalisation and the masking rules (built-in or YAML).

Pure, no I/O beyond reading the rules file. `masking` applies the rules; `pii` finds personal
data inside values. A YAML file (`CONTROLTOWER_MASKING_RULES`) replaces the key lists:

```yaml
email: [email, e_mail]          # regexes matched against the normalised key
phone: [phone, mobile, fax]
name: ['^(first|last|full|buyer|customer|recipient)_?name$']
address: [address, street]
card: [card_number]
bank: [iban]
national_id: [ssn, passport]    # also birth (dob) and secret (password, api_key, cvv)
keep: [sku_name, product_name]  # keys never masked
mask_emails_in_text: true
hash_key: "a long random secret shared by every collector"
```

Keys are normalised before matching, so spellings do not slip through: Unicode NFKC (full-width
letters fold to ASCII), zero-width and soft-hyphen characters removed, camelCase split, runs of
`_ - . / :` and spaces folded to one `_`, lower case: `Buyer__Name`, `buyer-name`, `ｂｕｙｅｒＮａｍｅ`
and `buy\u200ber_name` are all `buyer_name`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

from controltower import yamlfile
from controltower.settings import Settings

KINDS = ("email", "phone", "card", "bank", "address", "name", "national_id", "birth", "secret")
# Identifiers are a stable hash when they carry personal data, so they still correlate.
DEFAULT_HASH_KEY = "controltower-masking-v1"
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "email": (r"e_?mail",),
    "phone": (r"phone", r"mobile", r"^(tel|cell|fax)(_|$)", r"telephone", r"^fax", r"msisdn", r"whats_?app", r"^sms(_|$)"),
    "card": (r"(^|_)(card|cc|credit_card|debit_card|payment_card)_?(number|no|num|pan)?$", r"(^|_)pan$", r"^cc_?n(um|o)?$"),
    "bank": (r"(^|_)iban$", r"bank_?account", r"(^|_)account_?(number|no|num)$", r"(^|_)(bic|swift|routing_number|sort_code)$"),
    "name": (
        r"(^|_)(full|first|last|given|family|middle|maiden|sur|fore|nick|legal|display)?_?names?$",
        r"^(buyer|customer|recipient|consignee|receiver|addressee|attn|attention|c_o|care_of|contact|person|cardholder|card_holder|signed_by|signatory)$",
    ),
    "national_id": (
        r"(^|_)(ssn|sin|nin|nino|tin|itin|cpf|curp|aadhaar|pesel|bsn|nric|ppsn|personnummer)(_|$)",
        r"social_?security", r"national_?(id|identity|insurance)", r"(^|_)tax_?(id|number|no)$",
        r"passport", r"driv(er|ers|ing)_?licen[cs]e", r"(^|_)(id_card|identity_card|government_id)(_|$)",
    ),
    "birth": (r"(^|_)(dob|birthday|birthdate)$", r"(date|day|place|year)_?of_?birth", r"birth_?(date|day|place|year)"),
    "secret": (
        r"(^|_)(password|passwd|pwd|passphrase|secret|client_secret|api_?key|private_?key|authorization|cookie)$",
        r"(^|_)(access|refresh|id|auth|bearer|session|api|csrf|oauth)_?token$", r"^token$",
        r"(^|_)(cvv2?|cvc2?|card_?security_?code|security_?code|card_?verification(_\w+)?)$",
    ),
    "address": (
        r"address", r"^street", r"(^|_)street(_|$)", r"^addr", r"^line_?[123]$", r"^ship_to$", r"^bill_to$",
        r"^house_?(number|no)?$", r"(^|_)(strasse|straße)$", r"^(po_?box|postbox)$",
    ),
}
# Names of things, not people, stay readable (a sku's name, a carrier's name, ...).
DEFAULT_KEEP: tuple[str, ...] = (
    r"^(\w+_)?(sku|product|item|channel|location|store|warehouse|carrier|service|marketplace|seller|shop|file|event|stage|flow"
    r"|system|host|queue|topic|company|brand|category|span|app|application|table|field|column|job|task|rule|sla|metric|tag"
    r"|variant|model|scope|resource|attribute|key|class|type|method|operation|route|region|zone|country|city|state|bucket"
    r"|feed|report|template|plan|campaign|promotion|coupon|domain|server|device|printer|package|vendor|supplier|merchant"
    r"|business|organization|organisation|org|step|status|action|source|target|exception|error|queue|partner|listing|catalog"
    r"|collection|shipping_method|ship_method|service_level|property|param|parameter|header|cookie|bank|card_type|payment_method)"
    r"(_\w+)?_?names?$",
    r"^email_(sent|status|template|type|count|opt_in|verified)$",
    r"^(phone|email)_(type|verified|count|opt_in)$",
    r"ip_?address",
    r"^(mac|queue|endpoint|web|url|wallet|contract|mail_server|server)_?address$",
    r"^(card|payment)_(type|brand|network|scheme|last_?4|last_?four|expiry|exp_month|exp_year|bin)$",
)
# Inside an address container these stay readable (coarse location, not a person).
ADDRESS_KEEP = re.compile(
    r"^(city|town|state|state_or_region|region|province|county|country|country_code|countrycode|postal_code|postalcode"
    r"|zip|zip_code|zipcode|type|is_residential|address_type)$"
)
POSTAL_KEYS = frozenset({"postal_code", "postalcode", "zip", "zip_code", "zipcode"})
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f"), None)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s_\-./:]+")


def fold(text: str) -> str:
    """NFKC with zero-width characters removed: what a reader sees, in canonical code points."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(ZERO_WIDTH)


def normalise_key(key: str) -> str:
    return _SEPARATORS.sub("_", _CAMEL.sub("_", fold(key))).strip("_").lower()


@dataclass(frozen=True)
class MaskingRules:
    email: tuple[re.Pattern[str], ...]
    phone: tuple[re.Pattern[str], ...]
    name: tuple[re.Pattern[str], ...]
    address: tuple[re.Pattern[str], ...]
    keep: tuple[re.Pattern[str], ...]
    card: tuple[re.Pattern[str], ...] = ()
    bank: tuple[re.Pattern[str], ...] = ()
    national_id: tuple[re.Pattern[str], ...] = ()
    birth: tuple[re.Pattern[str], ...] = ()
    secret: tuple[re.Pattern[str], ...] = ()
    mask_emails_in_text: bool = True
    hash_key: str = DEFAULT_HASH_KEY

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
            raise doc.error("masking rules must be a mapping of email/phone/name/address/card/bank/keep to lists of key patterns")
        known = {*KINDS, "keep", "mask_emails_in_text", "hash_key"}
        for key in doc.data:
            if key not in known:
                raise doc.error(f"unknown key {key!r}; expected one of {', '.join(sorted(known))}", key)
        lists: dict[str, tuple[re.Pattern[str], ...]] = {}
        for kind in (*KINDS, "keep"):
            patterns = doc.data.get(kind, DEFAULT_KEEP if kind == "keep" else DEFAULT_KEYS[kind])
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
        hash_key = doc.data.get("hash_key", DEFAULT_HASH_KEY)
        if not isinstance(hash_key, str) or not hash_key:
            raise doc.error("hash_key: expected a non-empty string", "hash_key")
        return cls(mask_emails_in_text=flag, hash_key=hash_key, **lists)

    @classmethod
    def for_settings(cls, settings: Settings) -> MaskingRules:
        """The rules a process uses: the configured file, keyed by the `masking_hash_key` secret if set."""
        rules = cls.load(settings.masking_rules)
        return replace(rules, hash_key=settings.masking_hash_key) if settings.masking_hash_key else rules

    def kind_of(self, key: str) -> str | None:
        norm = normalise_key(key)
        if any(p.search(norm) for p in self.keep):
            return None
        for kind in KINDS:
            if any(p.search(norm) for p in getattr(self, kind)):
                return kind
        return None
