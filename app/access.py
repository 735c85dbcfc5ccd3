"""Who may reach the dashboard and who is recorded as doing things in it. Pure; no Streamlit.

- Bind: the dashboard can silence alerts, so it listens on loopback unless sign-in is configured
  (an `[auth]` section in .streamlit/secrets.toml) or a setting says a reverse proxy in front of
  it authenticates people (`CONTROLTOWER_DASHBOARD_BEHIND_PROXY=1`).
- Sign-in: with OIDC, only people whose verified email domain or group is on the allow-list get
  in (`CONTROLTOWER_DASHBOARD_ALLOWED_DOMAINS`, `CONTROLTOWER_DASHBOARD_ALLOWED_GROUPS`).
- Actor: the signed-in identity is what acknowledgements and silences record; a typed name only
  when no sign-in is configured.
"""

from __future__ import annotations

import ipaddress
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, *, auth_configured: bool, behind_proxy: bool) -> str | None:
    """Why the dashboard must not listen on `host`, in one line; None when it may."""
    if is_loopback(host) or auth_configured or behind_proxy:
        return None
    return (
        f"refusing to serve the dashboard on {host}: anyone who reaches it could silence alerts. "
        "Configure sign-in ([auth] in .streamlit/secrets.toml), or put an authenticating proxy in front "
        "and set CONTROLTOWER_DASHBOARD_BEHIND_PROXY=1, or use --host 127.0.0.1"
    )


def secrets_paths(cwd: Path) -> list[Path]:
    """Where Streamlit looks for secrets.toml: the user's folder and the working directory's."""
    return [Path.home() / ".streamlit" / "secrets.toml", cwd / ".streamlit" / "secrets.toml"]


def secrets_have_auth(paths: Iterable[Path]) -> bool:
    """True when any readable secrets.toml among `paths` has an `[auth]` section (Streamlit merges them)."""
    for path in paths:
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        if isinstance(doc.get("auth"), dict):
            return True
    return False


def _norm(text: Any) -> str:
    # Full-width and other compatibility forms compare as their plain letters; no zero-width tricks.
    cleaned = "".join(c for c in unicodedata.normalize("NFKC", str(text)) if unicodedata.category(c) != "Cf")
    return cleaned.strip().lower()


def email_domain(email: Any) -> str | None:
    text = _norm(email or "")
    if text.count("@") != 1:
        return None
    local, domain = text.split("@")
    return domain.rstrip(".") if local and domain else None


def _groups(user: Mapping[str, Any]) -> set[str]:
    raw = user.get("groups")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple | set):
        return set()
    return {_norm(g) for g in raw if isinstance(g, str)}


def may_sign_in(user: Mapping[str, Any], *, domains: Iterable[str], groups: Iterable[str]) -> bool:
    """Whether a signed-in OIDC user is let in: with neither allow-list set, everyone the IdP
    signed in; otherwise a verified email whose domain is listed (exact, no suffix match), or
    membership of a listed group. An IdP that says `email_verified: false` does not count."""
    allowed_domains = {_norm(d).lstrip("@").rstrip(".") for d in domains if str(d).strip()}
    allowed_groups = {_norm(g) for g in groups if str(g).strip()}
    if not allowed_domains and not allowed_groups:
        return True
    if allowed_groups & _groups(user):
        return True
    domain = email_domain(user.get("email"))
    verified = user.get("email_verified", True) is not False
    return bool(domain and verified and domain in allowed_domains)


def signed_in_actor(user: Mapping[str, Any]) -> str | None:
    """The identity to record for a signed-in user: email, else the subject or name."""
    if not user.get("is_logged_in", False):
        return None
    for claim in ("email", "preferred_username", "sub", "name"):
        value = user.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def actor(user: Mapping[str, Any], *, auth_configured: bool, typed: str = "") -> str | None:
    """Who is acting: the signed-in identity when sign-in is configured (a typed name is then
    ignored), the typed name otherwise; None when there is neither."""
    if auth_configured:
        return signed_in_actor(user)
    typed = typed.strip()
    return typed or None
