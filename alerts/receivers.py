"""Receivers: named notification targets (webhook, slack, pagerduty, email, log, teams, jsm,
ticket) and their YAML.

Secrets are never written in the rules file: a receiver names the environment variables that
hold them (`*_env`), read at delivery. This module only models and validates; sending is
`alerts.notify`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from controltower.errors import ConfigError
from controltower.settings import parse_duration
from controltower.yamlfile import Located

RECEIVER_TYPES = ("webhook", "slack", "pagerduty", "email", "log", "teams", "jsm", "ticket")
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
JSM_URL = "https://api.atlassian.com/jsm/ops/integration"
TICKET_TEMPLATES = ("jira",)
# Rule durations beyond ten years mean nothing and would overflow date arithmetic at evaluation.
MAX_DURATION_SECONDS = 3650 * 86400.0
MAX_TIMEOUT_SECONDS = 120.0
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*\Z")
LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Receiver:
    name: str
    type: str
    url: str | None = None
    url_env: str | None = None
    routing_key_env: str | None = None
    smtp_host: str = "localhost"
    smtp_port: int = 25
    sender: str | None = None
    to: tuple[str, ...] = ()
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout_seconds: float = 10.0
    api_key_env: str | None = None  # jsm
    template: str = "jira"  # ticket
    project: str | None = None
    issue_type: str = "Task"
    user_env: str | None = None
    token_env: str | None = None
    close_transition: str | None = None  # a transition id (digits) or name

    def secrets(self, environ: Mapping[str, str]) -> list[str]:
        """The secret values this receiver uses (to keep them out of logs and stored errors)."""
        names = [self.url_env, self.routing_key_env, self.password_env, self.api_key_env, self.token_env]
        values = [environ.get(n or "", "") for n in names if n]
        if self.type in ("slack", "teams") and self.url:  # a Workflows URL carries its signature
            values.append(self.url)
        user, token = environ.get(self.user_env or ""), environ.get(self.token_env or "")
        if user and token:  # the basic-auth header as a server may echo it
            values.append(base64.b64encode(f"{user}:{token}".encode()).decode())
        return [v for v in values if v]


# -- typed readers shared by the rules parser: each error names the file and line ------------

def duration(doc: Located, raw: Any, *path: Any) -> float:
    key = path[-1]
    if isinstance(raw, bool) or raw is None:
        raise doc.error(f'{key}: "{raw}" is not a duration (expected e.g. 90s, 15m, 4h)', *path)
    try:
        seconds = parse_duration(str(raw), where=str(key))
    except ConfigError as exc:
        raise doc.error(str(exc), *path) from None
    if seconds > MAX_DURATION_SECONDS:
        raise doc.error(f'{key}: "{str(raw)[:40]}" is longer than the longest allowed duration (3650d)', *path)
    return seconds


def text(doc: Located, raw: Any, *path: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise doc.error(f"{path[-1]}: expected a non-empty string, got {raw!r}", *path)
    return raw


def str_map(doc: Located, raw: Any, *path: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise doc.error(f"{path[-1]}: expected a mapping of names to strings", *path)
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not LABEL.match(key):
            raise doc.error(f"{path[-1]}: {key!r} is not a valid name", *path, key)
        if isinstance(value, dict | tuple | list | bool) or value is None:
            raise doc.error(f"{path[-1]}.{key}: expected a string", *path, key)
        out[key] = str(value)
    return out


def receiver_names(doc: Located, raw: Any, receivers: Mapping[str, Receiver], *path: Any) -> tuple[str, ...]:
    names = (raw,) if isinstance(raw, str) else raw
    if not isinstance(names, list | tuple):
        raise doc.error(f"{path[-1]}: expected a list of receiver names", *path)
    for j, rname in enumerate(names):
        if not isinstance(rname, str) or rname not in receivers:
            known = ", ".join(sorted(receivers)) or "none defined"
            raise doc.error(f"unknown receiver {rname!r} (defined: {known})", *path, j)
    return tuple(names)


def parse_receiver(doc: Located, name: Any, raw: Any) -> Receiver:
    path = ("receivers", name)
    if not isinstance(name, str) or not NAME.match(name):
        raise doc.error(f"receiver name {name!r} is not valid", *path)
    if not isinstance(raw, dict):
        raise doc.error(f"receiver {name}: expected a mapping with a type", *path)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in RECEIVER_TYPES:
        raise doc.error(
            f"receiver {name}: type {kind!r} is not one of {', '.join(RECEIVER_TYPES)}", *path, "type"
        )
    allowed = {
        "webhook": {"url", "url_env", "timeout"},
        "slack": {"url", "url_env", "timeout"},
        "pagerduty": {"url", "routing_key_env", "timeout"},
        "email": {"smtp_host", "smtp_port", "from", "to", "starttls", "username", "password_env", "timeout"},
        "log": set(),
        "teams": {"url", "url_env", "timeout"},
        "jsm": {"url", "api_key_env", "timeout"},
        "ticket": {"template", "url", "url_env", "project", "issue_type", "user_env", "token_env",
                   "close_transition", "timeout"},
    }[kind] | {"type"}
    for key in raw:
        if key not in allowed:
            hint = ""
            if key in {"routing_key", "password", "token", "api_key", "user"}:
                hint = f" (secrets are never written here: name an environment variable with {key}_env)"
            raise doc.error(
                f"receiver {name}: unknown field {key!r}{hint} (allowed: {', '.join(sorted(allowed))})",
                *path, key,
            )
    kw: dict[str, Any] = {"name": name, "type": kind}
    if "timeout" in raw:
        kw["timeout_seconds"] = duration(doc, raw["timeout"], *path, "timeout")
        if not 0 < kw["timeout_seconds"] <= MAX_TIMEOUT_SECONDS:
            raise doc.error(f"receiver {name}: timeout must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g}s "
                            "(a send holds the delivery of every later notification)", *path, "timeout")
    if kind in {"webhook", "slack", "teams", "ticket"}:
        kw.update(_url(doc, name, raw, path))
    if kind == "jsm":
        if "api_key_env" not in raw:
            raise doc.error(f"receiver {name}: api_key_env (an environment variable name) is required", *path)
        kw["api_key_env"] = text(doc, raw["api_key_env"], *path, "api_key_env")
        kw["url"] = _http(doc, name, raw.get("url", JSM_URL), *path, "url").rstrip("/")
    elif kind == "ticket":
        kw.update(_ticket(doc, name, raw, path))
    elif kind == "pagerduty":
        if "routing_key_env" not in raw:
            raise doc.error(f"receiver {name}: routing_key_env (an environment variable name) is required", *path)
        kw["routing_key_env"] = text(doc, raw["routing_key_env"], *path, "routing_key_env")
        kw["url"] = text(doc, raw.get("url", PAGERDUTY_URL), *path, "url")
    elif kind == "email":
        to = raw.get("to")
        if isinstance(to, str):
            to = (to,)
        if not to or not isinstance(to, list | tuple) or not all(isinstance(t, str) and "@" in t for t in to):
            raise doc.error(f"receiver {name}: to must be an address or a list of addresses", *path, "to")
        sender = raw.get("from")
        if not isinstance(sender, str) or "@" not in sender:
            raise doc.error(f"receiver {name}: from must be an email address", *path, "from")
        port = raw.get("smtp_port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise doc.error(f"receiver {name}: smtp_port must be a port number", *path, "smtp_port")
        starttls = raw.get("starttls", False)
        if not isinstance(starttls, bool):
            raise doc.error(f"receiver {name}: starttls must be true or false", *path, "starttls")
        kw.update(
            smtp_host=text(doc, raw.get("smtp_host", "localhost"), *path, "smtp_host"),
            smtp_port=port, sender=sender, to=tuple(to), starttls=starttls,
            username=raw.get("username"),
            password_env=raw.get("password_env"),
        )
    return Receiver(**kw)


def _http(doc: Located, name: str, raw: Any, *path: Any) -> str:
    url = text(doc, raw, *path)
    if not url.startswith(("http://", "https://")):
        raise doc.error(f"receiver {name}: url must start with http:// or https://", *path)
    try:
        host = httpx.URL(url).host
    except (httpx.InvalidURL, ValueError) as exc:
        raise doc.error(f"receiver {name}: url is not valid ({exc})", *path) from None
    if not host or any(c.isspace() for c in url):
        raise doc.error(f"receiver {name}: url is not valid (no host, or a space in it)", *path)
    return url


def _url(doc: Located, name: str, raw: Mapping[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    if ("url" in raw) == ("url_env" in raw):
        raise doc.error(f"receiver {name}: give exactly one of url or url_env", *path)
    if "url" in raw:
        return {"url": _http(doc, name, raw["url"], *path, "url")}
    return {"url_env": text(doc, raw["url_env"], *path, "url_env")}


def _ticket(doc: Located, name: str, raw: Mapping[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    """`type: ticket`: `template: jira` (the default and, for now, only one), project and credentials."""
    template = raw.get("template", "jira")
    if template not in TICKET_TEMPLATES:
        raise doc.error(f"receiver {name}: template {template!r} is not one of {', '.join(TICKET_TEMPLATES)}",
                        *path, "template")
    for key in ("project", "user_env", "token_env"):
        if key not in raw:
            raise doc.error(f"receiver {name}: {key} is required for a ticket receiver", *path)
    out: dict[str, Any] = {
        "template": template,
        "project": text(doc, raw["project"], *path, "project"),
        "issue_type": text(doc, raw.get("issue_type", "Task"), *path, "issue_type"),
        "user_env": text(doc, raw["user_env"], *path, "user_env"),
        "token_env": text(doc, raw["token_env"], *path, "token_env"),
    }
    if "close_transition" in raw:
        transition = raw["close_transition"]
        if isinstance(transition, int) and not isinstance(transition, bool):
            transition = str(transition)
        out["close_transition"] = text(doc, transition, *path, "close_transition")
    return out
