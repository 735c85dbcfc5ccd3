"""Settings: declared once with defaults and help, built once per process.

Precedence is flags > environment (`CONTROLTOWER_<NAME>`) > defaults. Nothing here reads the
environment at import time: `Settings.load()` does, when a process starts, and the frozen
result is passed down. Every setting is documented in README.md (a test checks it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controltower.errors import ConfigError
from controltower.identity import DEFAULT_FANOUT, DEFAULT_IDENTITY_KEYS

ENV_PREFIX = "CONTROLTOWER_"

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# ASCII digits only (`float()` would also take `١` or `1_0`), an optional exponent for YAML
# floats written back as text (`1e-05`), an optional unit.
_DURATION = re.compile(r"((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?) ?(ms|s|m|h|d|w)?", re.ASCII)
MAX_DURATION_SECONDS = 100 * 366 * 86400  # a century: longer is a typo, and overflows timedelta


def parse_duration(text: str, *, where: str = "duration") -> float:
    """Parse `90s`, `15m`, `4h`, `7d`, `250ms` or a bare number of seconds into seconds.

    Only ASCII digits count, and a duration longer than a century is refused (a ConfigError,
    never an OverflowError from whoever turns it into a `timedelta`).
    """
    match = _DURATION.fullmatch(str(text).strip())
    if match:
        value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
        if math.isfinite(value) and value <= MAX_DURATION_SECONDS:
            return value
        raise ConfigError(f'{where}: "{str(text)[:40]}" is longer than the longest allowed duration (100 years)')
    raise ConfigError(f'{where}: "{str(text)[:40]}" is not a duration (expected e.g. 250ms, 90s, 15m, 4h, 7d)')


def _bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f'{where}: "{text}" is not a boolean (expected true or false)')


def _float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f'{where}: "{text}" is not a number') from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f'{where}: "{text}" must be a finite number >= 0')
    return value


def _int(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f'{where}: "{text}" is not an integer') from None
    if value < 0:
        raise ConfigError(f'{where}: "{text}" must not be negative')
    return value


def _size(text: str, where: str) -> int:
    raw = text.strip().upper()
    for suffix, factor in (("KIB", 1024), ("MIB", 1024**2), ("GIB", 1024**3), ("B", 1)):
        if raw.endswith(suffix):
            return _int(raw[: -len(suffix)].strip(), where) * factor
    return _int(raw, where)


def _list(text: str, where: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _str(text: str, where: str) -> str:
    return text


def _opt_str(text: str, where: str) -> str | None:
    return text or None


def _path(text: str, where: str) -> Path:
    return Path(text).expanduser()


def _opt_path(text: str, where: str) -> Path | None:
    return Path(text).expanduser() if text else None


def _seconds(text: str, where: str) -> float:
    return parse_duration(text, where=where)


METRICS_AUTH = ("read-key", "token", "open")


def _metrics_auth(text: str, where: str) -> str:
    if text.strip().lower() not in METRICS_AUTH:
        raise ConfigError(f'{where}: "{text}" is not one of {", ".join(METRICS_AUTH)}')
    return text.strip().lower()


def _setting(default: Any, parse: Callable[[str, str], Any], help: str, *, secret: bool = False) -> Any:
    """A documented setting; a `secret` one never appears in the settings' repr (logs, tracebacks)."""
    return field(default=default, repr=not secret, metadata={"parse": parse, "help": help, "secret": secret})


DEFAULT_KEY_ATTRIBUTES = (  # searchable; identity_keys are added to these
    "external_order_id",
    "marketplace_order_id",
    "erp_document",
    "sku",
    "tracking_number",
    "settlement_id",
    "return_id",
    "rma",
    "feed_id",
    "shipment_id",
    "invoice_id",
)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _setting(
        None,
        _opt_str,
        "PostgreSQL URL (postgresql+psycopg://user:pass@host/db). Unset: an embedded PostgreSQL "
        "is started from the pgserver package in data_dir.",
        secret=True,
    )
    data_dir: Path = _setting(
        Path(".controltower"),
        _path,
        "Folder for local state: the embedded database (data_dir/pgdata), drop folders, demo output.",
    )
    host: str = _setting("127.0.0.1", _str, "Address the collector listens on.")
    port: int = _setting(4318, _int, "Collector port (4318 is the standard OTLP/HTTP port).")
    workers: int = _setting(1, _int, "Collector worker processes (uvicorn --workers).")
    max_body_bytes: int = _setting(
        64 * 1024 * 1024,
        _size,
        "Largest request body accepted, after decompression (413 past it). Accepts 64MiB, 1048576.",
    )
    max_batch_events: int = _setting(
        50_000, _int, "Most records one request may carry; POST /v1/events with more is refused whole (413), OTLP spans past it are rejected each with a reason."
    )
    max_event_age: float = _setting(
        30 * 86400.0,
        _seconds,
        "Events whose occurred_at is older than this are rejected per record (e.g. 30d).",
    )
    max_future_skew: float = _setting(
        3600.0, _seconds, "Events whose occurred_at is further than this in the future are rejected (e.g. 1h)."
    )
    max_inflight_batches: int = _setting(
        8,
        _int,
        "Write batches a collector process runs at once; past it requests get 503 with Retry-After "
        "instead of being queued without bound.",
    )
    retry_after_seconds: int = _setting(
        2, _int, "Retry-After value sent with 429/503 answers, in seconds."
    )
    key_attributes: tuple[str, ...] = _setting(
        DEFAULT_KEY_ATTRIBUTES,
        _list,
        "Event attributes indexed as searchable business keys (comma-separated).",
    )
    identity_keys: tuple[str, ...] = _setting(
        DEFAULT_IDENTITY_KEYS,
        _list,
        "Keys that join correlation IDs into one business transaction (order_id and event attributes; "
        "comma-separated). Other key attributes stay searchable but never link. After changing it, "
        "run `controltower relink`.",
    )
    link_fanout_limit: int = _setting(
        DEFAULT_FANOUT,
        _int,
        "An identity value seen on more correlation IDs than this is a hub (listed, counted) and links "
        "none of them. After changing it, run `controltower relink`.",
    )
    orphan_grace_seconds: int = _setting(
        900,
        _int,
        "How long an event's identity keys may link to nothing known (no channel order) before its "
        "business transaction counts as an orphan.",
    )
    max_key_values: int = _setting(
        100,
        _int,
        "Most values one event may carry under one key attribute (e.g. SKUs); a record with more "
        "is rejected with the reason instead of writing one key row per value.",
    )
    deadline_attributes: tuple[str, ...] = _setting(
        ("expected_ship_date",),
        _list,
        "Event attributes holding promised deadlines (besides every deadline_attribute of the loaded "
        "SLA definitions); each must be YYYY-MM-DD or RFC 3339 with offset, or the record is rejected.",
    )
    deadline_min_year: int = _setting(2000, _int, "Earliest year a deadline attribute may name.")
    deadline_max_year: int = _setting(2100, _int, "Latest year a deadline attribute may name.")
    masking_rules: Path | None = _setting(
        None,
        _opt_path,
        "YAML file of personal-data masking rules replacing the built-in ones (see README).",
    )
    masking_hash_key: str | None = _setting(
        None,
        _opt_str,
        "Secret key of the keyed hash that turns personal data inside identifiers into stable tokens "
        "(email-<hash>); the same on every collector. Unset: the masking rules' hash_key, else a "
        "public built-in key (fine for the demo, guessable in production: set it).",
        secret=True,
    )
    raw_store_key: str | None = _setting(
        None,
        _opt_str,
        "Fernet key (urlsafe base64, 32 bytes; `python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`) that encrypts the opt-in raw store of replayable "
        "messages (`raw_store: true` on a tap). Unset: a tap with raw_store refuses to start, and "
        "HTTP replay of stored payloads is impossible.",
        secret=True,
    )
    require_api_keys: bool = _setting(
        False,
        _bool,
        "Demand an API key on ingest even before any key exists. Keys are always demanded once "
        "one has been created with `controltower keys create`.",
    )
    slas_file: Path | None = _setting(
        None, _opt_path, "SLA definitions YAML; unset: the shipped retail defaults."
    )
    alerts_file: Path | None = _setting(
        None, _opt_path, "Alert rules YAML; unset: the shipped defaults."
    )
    taps_file: Path | None = _setting(
        None,
        _opt_path,
        "Broker taps YAML (RabbitMQ queues, NATS JetStream consumers; see collectors/taps.example.yaml); "
        "set: the scheduler drains every tap, probes their queues for depth and age, and replay reads its "
        "`replay:` section. Unset: no taps.",
    )
    exceptions_file: Path | None = _setting(
        None, _opt_path,
        "Exception work queue YAML (classification rules, quiet_minutes for auto-resolve); unset: the "
        "shipped defaults (metrics/exceptions.yaml).",
    )
    dashboard_port: int = _setting(8501, _int, "Dashboard (Streamlit) port.")
    dashboard_url: str = _setting(
        "http://127.0.0.1:8501",
        _str,
        "Public URL of the dashboard, used for deep links in alert notifications.",
    )
    dashboard_behind_proxy: bool = _setting(
        False,
        _bool,
        "The dashboard sits behind a reverse proxy that authenticates people: it may then listen on "
        "a non-loopback address without Streamlit sign-in ([auth] in .streamlit/secrets.toml).",
    )
    dashboard_allowed_domains: tuple[str, ...] = _setting(
        (), _list, "With dashboard sign-in (OIDC): email domains allowed in (comma-separated; empty: any)."
    )
    dashboard_allowed_groups: tuple[str, ...] = _setting(
        (), _list, "With dashboard sign-in (OIDC): groups (the ID token's groups claim) allowed in (comma-separated)."
    )
    refresh_seconds: float = _setting(
        15.0, _seconds, "Dashboard live-refresh interval and query cache lifetime."
    )
    evaluation_interval: float = _setting(
        30.0, _seconds, "How often the scheduler recomputes rollups and evaluates alert rules."
    )
    log_level: str = _setting("info", _str, "Log level: debug, info, warning, error.")
    rate_limit_events: float = _setting(
        0.0,
        _float,
        "Events per second one API key (or, without keys, one client address) may send to one "
        "collector process; past it requests get 429 with Retry-After. 0 = no limit.",
    )
    body_timeout: float = _setting(
        30.0, _seconds, "A request body (every POST) must arrive within this time, else 408; slow senders hold no connection for ever."
    )
    header_timeout: float = _setting(
        5.0, _seconds, "Idle keep-alive connections (and their next request's headers) are closed after this (uvicorn timeout_keep_alive)."
    )
    max_connections: int = _setting(
        1000, _int, "Concurrent connections and requests one collector process serves; beyond it 503 (uvicorn limit_concurrency). 0 = no limit."
    )
    metrics_auth: str = _setting(
        "read-key",
        _metrics_auth,
        "Who may scrape /metrics: read-key (a key with the read scope, once any key has existed), "
        "token (Authorization: Bearer <metrics_token>) or open.",
    )
    metrics_token: str | None = _setting(
        None, _opt_str, "The bearer token /metrics demands when metrics_auth is token (compared in constant time).",
        secret=True,
    )
    retention_events: float = _setting(
        35 * 86400.0, _seconds, "Raw events are kept this long; whole daily partitions are dropped after it."
    )
    retention_transactions: float = _setting(
        120 * 86400.0,
        _seconds,
        "Transactions (with milestones and keys) are kept this long after their last event "
        "(marketplace disputes settle after ~90 days).",
    )
    retention_rollups: float = _setting(
        400 * 86400.0, _seconds, "Hourly SLA rollups are kept this long (13 months for year-on-year)."
    )
    retention_alerts: float = _setting(
        180 * 86400.0, _seconds, "Alert history, delivered notifications, the audit log and resolved incidents are kept this long."
    )

    @classmethod
    def fields_help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from flags (`overrides`, None values ignored) > environment > defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name in env:
                values[f.name] = f.metadata["parse"](env[name], name)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}")
            if value is not None:
                values[key] = value
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def indexed_keys(self) -> tuple[str, ...]:
        """Attributes written to `transaction_keys`: the searchable ones and the identity keys
        (`order_id` is a column of its own, indexed always)."""
        extra = tuple(k for k in self.identity_keys if k != "order_id" and k not in self.key_attributes)
        return (*self.key_attributes, *extra)

    @property
    def linking_keys(self) -> frozenset[str]:
        return frozenset(self.identity_keys)
