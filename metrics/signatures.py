"""What makes two failures the same exception: the normalised message and the group signature.

Pure functions, no I/O. `normalise(message)` strips what varies between occurrences of one
failure (quoted strings, emails, UUIDs, hex strings, any token with a digit: order numbers,
SKUs, ids, counts), collapses whitespace and lowercases; `signature(...)` is the sha256 of the
channel, the milestone (`flow.stage`), the error code and that normalised message, so the
grouping job files every occurrence of one failure under one group however its ids differ.
"""

from __future__ import annotations

import hashlib
import re

MAX_MESSAGE = 500  # characters of a normalised message kept (and hashed)
# a quote opens after a non-word character (so "can't" and "won't" are no quotes)
_QUOTED = re.compile(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"|`[^`]*`|“[^”]*”|‘[^’]*’")
# starts only where a run of address characters starts: tried from every position of a long run,
# the pattern would take quadratic time (a 16 KB error message: seconds per event)
_EMAIL = re.compile(r"(?<![^\s@'\"<>()])[^\s@'\"<>()]+@[^\s@'\"<>()]+\.[a-z]{2,}", re.IGNORECASE)
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
_HEX = re.compile(r"\b(?:0x)?[0-9a-f]{8,}\b", re.IGNORECASE)  # hashes, trace ids (also without digits)
# a run of non-separators; one holding a digit (112-3345, AB-12, id=9f8e..., #42, v2, 3s) becomes <n>,
# one holding the store's mask (names after a cue word: "D*** S***") <masked>. Matched run by run
# and then looked into: a pattern `run*\d run*` backtracks quadratically over a long run without digits.
_TOKEN = re.compile(r"[^\s'\"(),;\[\]{}<>]+")
_DIGIT = re.compile(r"\d")
MASKED = "***"
_SPACE = re.compile(r"\s+")


def normalise(message: str | None) -> str:
    """The message with its varying parts replaced by placeholders (`<q>`, `<email>`, `<uuid>`,
    `<hex>`, `<n>`, `<masked>`), whitespace collapsed, lowercased, cut to `MAX_MESSAGE` characters."""
    if not message:
        return ""
    text = _QUOTED.sub("<q>", message)
    text = _EMAIL.sub("<email>", text)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _TOKEN.sub(_token, text)
    return _SPACE.sub(" ", text).strip().lower()[:MAX_MESSAGE]


def _token(match: re.Match[str]) -> str:
    token = match.group()
    if _DIGIT.search(token):
        return "<n>"
    return "<masked>" if MASKED in token else token


def normalise_code(error_code: str | None) -> str:
    return (error_code or "").strip().lower()[:128]


def signature(channel: str, milestone: str, error_code: str | None, message: str | None) -> str:
    """sha256 (hex) of channel, milestone, error code and the normalised message."""
    parts = (channel, milestone, normalise_code(error_code), normalise(message))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
