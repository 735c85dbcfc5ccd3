"""Personal data inside values: emails, payment cards, IBANs, phones, names and street
addresses, found and masked in text. Pure.

Two styles of mask:
- **readable** (free text, payload values): `j***@***.com`, `[card …1111]`, `[iban DE…3000]`,
  `[phone …43]`, `J*** D***`, `[address]`: enough for support to see what was there.
- **token** (identifiers: ids, error codes, dict keys): `email-3fa9c1d2e4b5`, a keyed hash of
  the normalised value, so the same customer's id still correlates and links, two customers
  never collide, and the clear value is never stored or indexed as a search key.

Detection folds the text first (NFKC, zero-width removed: see `maskrules.fold`), so full-width
`＠`, zero-width joiners and URL-encoded `%40` do not hide an email. Cards are digit runs of
13–19 (single spaces or dashes allowed) with a card network's prefix and length that pass the
Luhn check; IBANs pass ISO 13616's mod-97 check. Phones, names and streets are only looked for
in free text (messages, notes), where marketplace order numbers are not expected; so are US
social security numbers (`123-45-6789`) and secrets after a cue (`password=…`, `token: …`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable

from controltower.maskrules import fold

EMAIL_RE = re.compile(r"(?<![\w.+%-])([\w.+%-]+?)(?:@|%40)([\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,})(?![\w-])")
# A card number stands apart: a digit run glued to letters is part of a token (a hex trace id
# holds 13+ decimal digits in a row about once in 150,000 ids, and a 13-digit run passes Luhn).
_CARD_RE = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z])")
_IBAN_RE = re.compile(r"\b([A-Z]{2}\d{2})((?: ?[A-Z0-9]){11,30})\b")
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)\s?\d{3}[\s.-]\d{4}"
    r"|\d{3}[\s.]\d{3}[\s.-]\d{4}|\d{3}-\d{3}-\d{4})(?![\w-])"
)
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][^\W\d_]*(?:['’-][^\W\d_]+)*"
_NAME_RE = re.compile(
    r"(?i:\b(customer|buyer|recipient|consignee|receiver|addressee|cardholder|name|attn|attention|contact|dear"
    r"|(?:ship(?:ped)?|bill(?:ed)?|deliver(?:ed|y)?|sold)\s+to|mr|mrs|ms|miss|dr|c/o))\b\.?\s*[:=]?\s*[\"']?"
    r"(?!(?i:mr|mrs|ms|miss|dr)\b)"
    rf"({_NAME_WORD}(?:\s+(?:[A-Z]\.\s*)?{_NAME_WORD}){{0,2}})"
)
_STREET_RE = re.compile(
    r"\b\d{1,6}[A-Za-z]?\s+(?:[A-Za-z0-9][\w'’.-]*\s+){0,4}?"
    r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|parkway|pkwy"
    r"|highway|hwy|circle|cir|square|sq|trail|trl|crescent|close)\b\.?"
    r"(?:,?\s*(?i:apt|apartment|suite|ste|unit|floor|fl|#)\.?\s*[\w-]+)?"
    r"|\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee)\s+\d+[a-z]?\b"
    r"|\b(?i:p\.?\s*o\.?\s*box)\s+\d+\b"
)
_SSN_RE = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_SECRET_RE = re.compile(
    r"(?i)\b(password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token|token|authorization)"
    r"(\s*[:=]\s*)(?:bearer\s+|basic\s+)?[\"']?[^\s\"',;&]{3,}"
)
# Quick screens (one C-level search each) before the detectors run.
_SCREEN_LONG = re.compile(r"\d[\d -]{11}|[A-Z]{2}\d\d")


def clean(text: str) -> bool:
    """True when ASCII `text` cannot hold what `Finder` looks for outside free text: no `@`,
    and too short for a card or an IBAN or without their shape. The hot path of masking."""
    return "@" not in text and "%40" not in text and (len(text) < 13 or not _SCREEN_LONG.search(text))
# (prefix ranges, allowed lengths) of the card networks (ISO/IEC 7812 IINs in use)
_NETWORKS: tuple[tuple[tuple[int, int, int], frozenset[int]], ...] = (
    ((1, 4, 4), frozenset({13, 16, 19})),  # Visa
    ((2, 51, 55), frozenset({16})),  # Mastercard
    ((4, 2221, 2720), frozenset({16})),  # Mastercard 2-series
    ((2, 34, 34), frozenset({15})), ((2, 37, 37), frozenset({15})),  # Amex
    ((4, 6011, 6011), frozenset(range(16, 20))), ((3, 644, 649), frozenset(range(16, 20))),
    ((2, 65, 65), frozenset(range(16, 20))),  # Discover
    ((4, 3528, 3589), frozenset(range(16, 20))),  # JCB
    ((3, 300, 305), frozenset(range(14, 20))), ((2, 36, 36), frozenset(range(14, 20))),
    ((2, 38, 39), frozenset(range(14, 20))),  # Diners
    ((2, 62, 62), frozenset(range(16, 20))),  # UnionPay
    ((2, 50, 50), frozenset(range(12, 20))), ((2, 56, 58), frozenset(range(12, 20))),  # Maestro
)


def token(kind: str, value: str, key: bytes) -> str:
    digest = hmac.new(key, value.strip().lower().encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:12]}"


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def is_card(digits: str) -> bool:
    if not 12 <= len(digits) <= 19 or not digits.isdigit():
        return False
    for (width, low, high), lengths in _NETWORKS:
        if len(digits) in lengths and low <= int(digits[:width]) <= high:
            return luhn(digits)
    return False


def is_iban(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def mask_email(value: str) -> str:
    """Readable mask of every email in `value`; `***` when the whole value is not one."""
    masked = EMAIL_RE.sub(_readable_email, fold(value))
    return masked if masked != fold(value) else "***"


def _readable_email(match: re.Match[str]) -> str:
    local, domain = match.group(1), match.group(2)
    return f"{local[:1]}***@***.{domain.rsplit('.', 1)[-1]}"


def mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"***{digits[-2:]}" if len(digits) >= 6 else "***"


def mask_name(value: str) -> str:
    return " ".join(f"{part[:1]}***" for part in value.split()) or "***"


def mask_card(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"[card …{digits[-4:]}]" if len(digits) >= 12 else "***"


def mask_by_kind(kind: str, value: str) -> str:
    """The whole value is personal data of `kind` (its key says so)."""
    if kind == "email":
        return mask_email(value)
    if kind == "phone":
        return mask_phone(value)
    if kind == "name":
        return mask_name(value)
    if kind == "card":
        return mask_card(value)
    return "***"


class Finder:
    """Masks personal data found inside values. `hash_key` keys the identifier tokens."""

    def __init__(self, hash_key: str, *, emails: bool = True) -> None:
        self.key = hash_key.encode()
        self.emails = emails

    def value(self, text: str, *, free_text: bool = False, identifier: bool = False) -> str:
        """`text` with the personal data found in it masked (the same object when none)."""
        if not free_text and text.isascii() and clean(text):
            return text
        folded = fold(text)
        out = folded
        if self.emails and ("@" in out or "%40" in out):
            out = EMAIL_RE.sub(self._email_token if identifier else _readable_email, out)
        out = _CARD_RE.sub(self._card(identifier), out)
        out = _IBAN_RE.sub(self._iban(identifier), out)
        if free_text:
            out = _SECRET_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", out)
            out = _SSN_RE.sub("[ssn]", out)
            out = _STREET_RE.sub("[address]", out)
            out = _PHONE_RE.sub(lambda m: f"[phone …{re.sub(r'[^0-9]', '', m.group())[-2:]}]", out)
            out = _NAME_RE.sub(_masked_name, out)
        return text if out == folded else out

    def identifier(self, text: str) -> str:
        """An id, code or dict key: personal data inside becomes a stable token. A value made
        only of digits is an identifier (order numbers are often 13–19 digits), not a card."""
        if text.isdigit() or (text.isascii() and clean(text)):
            return text
        return self.value(text, identifier=True)

    def _email_token(self, match: re.Match[str]) -> str:
        return token("email", f"{match.group(1)}@{match.group(2)}".replace("%40", "@"), self.key)

    def _card(self, identifier: bool) -> Callable[[re.Match[str]], str]:
        def one(match: re.Match[str]) -> str:
            text = match.group()
            if "  " in text or "--" in text:
                return text
            digits = text.replace(" ", "").replace("-", "")
            if not is_card(digits):
                return text
            return token("card", digits, self.key) if identifier else f"[card …{digits[-4:]}]"

        return one

    def _iban(self, identifier: bool) -> Callable[[re.Match[str]], str]:
        def one(match: re.Match[str]) -> str:
            text = match.group()
            if not is_iban(text):
                return text
            compact = text.replace(" ", "")
            return token("iban", compact, self.key) if identifier else f"[iban {compact[:2]}…{compact[-4:]}]"

        return one


def _masked_name(match: re.Match[str]) -> str:
    name = match.group(2)
    if name.split()[0].lower() in _NOT_NAMES:
        return match.group()
    return match.group()[: match.start(2) - match.start()] + mask_name(name)


# Capitalised words that follow a cue word without being a person's name.
_NOT_NAMES = frozenset(
    "service support care order orders account accounts number id record records not is was has had the a an "
    "address email phone name names details data info information portal api service's".split()
)
