"""taps.yaml: which broker queues and JetStream consumers feed the store, and how (the parser).

Loaded once (`load_taps(path)`) by the `tap` command, the scheduler's tap job, the queue probe
and replay; every mistake is one `file:line: what` error. Secrets never live here: a broker URL
with a password is refused, `url_env` names the environment variable holding it and is read only
when connecting (`TapConfig.broker_url(environ)`). The top-level `replay:` section belongs to
`controltower.replayconfig` and is accepted here unread. Documented in collectors/taps.example.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collectors.taps.mapping import Mapping, compile_mapping
from controltower import yamlfile
from controltower.errors import ConfigError
from controltower.settings import parse_duration
from controltower.yamlfile import Located

BROKERS = ("rabbitmq", "jetstream")
FORMATS = ("canonical", "mapped")
DEFAULT_URLS = {"rabbitmq": "amqp://127.0.0.1:5672/", "jetstream": "nats://127.0.0.1:4222"}
URL_SCHEMES = {"rabbitmq": ("amqp", "amqps"), "jetstream": ("nats", "tls")}
MAX_BATCH = 10_000  # RabbitMQ prefetch is 16-bit; a batch is one database transaction
MAX_BATCH_WAIT = 60.0
DEFAULT_PROBE_INTERVAL = 30.0
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}", re.ASCII)
_MILESTONE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.[a-z0-9][a-z0-9_-]{0,63}", re.ASCII)
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)

TAP_KEYS = ("name", "broker", "url_env", "url", "queue", "dead_letter_queue", "source_exchange", "stream",
            "subject", "durable", "dead_letter_subject", "quarantine", "format", "mapping", "channel", "hop",
            "batch", "batch_wait", "raw_store", "peek", "browse_dead_letters",
            "dead_letter_milestone")
TOP_KEYS = ("taps", "probe_interval", "replay")  # the raw store's retention is replay.raw_store_days


@dataclass(frozen=True)
class TapConfig:
    name: str
    broker: str
    where: str  # file:line of the tap, for errors found later (a missing environment variable)
    url_env: str | None = None
    url: str | None = None
    queue: str | None = None  # rabbitmq
    dead_letter_queue: str | None = None
    source_exchange: str | None = None
    stream: str | None = None  # jetstream
    subject: str | None = None
    durable: str | None = None
    dead_letter_subject: str | None = None
    quarantine: str = ""
    format: str = "canonical"
    mapping: Mapping | None = None
    channel: str | None = None
    hop: str | None = None
    batch: int = 500
    batch_wait_seconds: float = 0.2
    raw_store: bool = False
    peek: bool = True  # the queue probe may look at a queue's first message for its age (collectors.queueprobe)
    browse_dead_letters: bool = True  # dead letters become dead_letter events (collectors.deadletters)
    dead_letter_milestone: str | None = None  # flow.stage those events failed to reach (default: the message's)

    @property
    def source(self) -> str:
        """The `source` column of the events this tap stores."""
        return f"tap:{self.name}"

    @property
    def consumed(self) -> str:
        """What the tap reads, for messages and logs: the queue, or stream/subject."""
        if self.broker == "rabbitmq":
            return str(self.queue)
        return f"{self.stream}/{self.subject}" if self.subject else str(self.stream)

    def broker_url(self, environ: AnyMapping[str, str]) -> str:
        """The URL to connect with: from `url_env` (read now, never stored), else `url`, else the local default."""
        if self.url_env:
            value = environ.get(self.url_env, "").strip()
            if not value:
                raise ConfigError(f"{self.where}: tap {self.name}: environment variable {self.url_env} "
                                  "(url_env) is not set")
            return value
        return self.url or DEFAULT_URLS[self.broker]


@dataclass(frozen=True)
class TapsConfig:
    taps: tuple[TapConfig, ...]
    probe_interval_seconds: float = DEFAULT_PROBE_INTERVAL
    source: str = ""

    def tap(self, name: str) -> TapConfig:
        for tap in self.taps:
            if tap.name == name:
                return tap
        raise ConfigError(f"{self.source}: no tap named {name!r} (known: {', '.join(t.name for t in self.taps)})")


def load_taps(path: Path | str) -> TapsConfig:
    return parse_taps(yamlfile.load(path))


def loads_taps(text: str, source: str = "<string>") -> TapsConfig:
    return parse_taps(yamlfile.loads(text, source))


def parse_taps(doc: Located) -> TapsConfig:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("expected a mapping with a taps: list")
    _known(data, TOP_KEYS, doc)
    taps_doc = data.get("taps")
    if not isinstance(taps_doc, list) or not taps_doc:
        raise doc.error("taps: expected a list of taps (name, broker, queue or stream, ...)", "taps")
    taps = tuple(_tap(item, doc, i) for i, item in enumerate(taps_doc))
    seen: dict[str, int] = {}
    for i, tap in enumerate(taps):
        if tap.name in seen:
            raise doc.error(f"tap name {tap.name!r} is used twice (first at line "
                            f"{doc.line('taps', seen[tap.name])})", "taps", i, "name")
        seen[tap.name] = i
    probe = _duration(data.get("probe_interval", DEFAULT_PROBE_INTERVAL), doc, "probe_interval")
    if probe < 1:
        raise doc.error("probe_interval: at least 1s", "probe_interval")
    return TapsConfig(taps=taps, probe_interval_seconds=probe, source=doc.source)


def _known(data: dict[Any, Any], keys: tuple[str, ...], doc: Located, *where: Any) -> None:
    for key in data:
        if key not in keys:
            raise doc.error(f"unknown key {key!r} (expected one of {', '.join(keys)})", *where, key)


def _str(data: dict[Any, Any], key: str, doc: Located, *where: Any, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise doc.error(f"{key}: required", *where)
        return None
    if not isinstance(value, str) or (not value.strip() and key != "source_exchange"):
        raise doc.error(f"{key}: expected a non-empty string, got {value!r}", *where, key)
    return value.strip()


def _int(value: Any, doc: Located, low: int, high: int, *where: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise doc.error(f"{where[-1]}: expected a whole number from {low} to {high}, got {value!r}", *where)
    return value


def _duration(value: Any, doc: Located, *where: Any) -> float:
    try:
        return parse_duration(str(value), where=str(where[-1]))
    except ConfigError as exc:
        raise doc.error(str(exc), *where) from None


def _tap(item: Any, doc: Located, i: int) -> TapConfig:
    at = ("taps", i)
    if not isinstance(item, dict):
        raise doc.error("a tap: expected a mapping (name, broker, ...)", *at)
    _known(item, TAP_KEYS, doc, *at)
    name = _str(item, "name", doc, *at, required=True)
    assert name is not None
    if not _NAME.fullmatch(name):
        raise doc.error(f"name: {name!r} is not a slug (lowercase letters, digits, - _ .)", *at, "name")
    broker = item.get("broker")
    if broker not in BROKERS:
        raise doc.error(f"broker: expected one of {', '.join(BROKERS)}, got {broker!r}", *at, "broker")
    url_env, url = _str(item, "url_env", doc, *at), _str(item, "url", doc, *at)
    if url_env and url:
        raise doc.error("give url_env or url, not both", *at, "url")
    if url_env and not _ENV.fullmatch(url_env):
        raise doc.error(f"url_env: {url_env!r} is not an environment variable name", *at, "url_env")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in URL_SCHEMES[broker]:
            raise doc.error(f"url: expected a {' or '.join(URL_SCHEMES[broker])}:// URL", *at, "url")
        if parts.password:
            # never echo it: the line number is enough to find it
            raise doc.error("url: holds a password; put the URL in an environment variable and name it "
                            "with url_env", *at, "url")
    values: dict[str, Any] = {"name": name, "broker": broker, "where": doc.where(*at), "url_env": url_env, "url": url}
    if broker == "rabbitmq":
        for key in ("stream", "subject", "durable", "dead_letter_subject"):
            if key in item:
                raise doc.error(f"{key}: only for broker: jetstream", *at, key)
        values["queue"] = _str(item, "queue", doc, *at, required=True)
        values["dead_letter_queue"] = _str(item, "dead_letter_queue", doc, *at)
        values["source_exchange"] = _str(item, "source_exchange", doc, *at)
        quarantine = _str(item, "quarantine", doc, *at) or f"{values['queue']}.quarantine"
        if quarantine in (values["queue"], values["dead_letter_queue"]):
            raise doc.error("quarantine: must differ from the queue and the dead-letter queue", *at, "quarantine")
    else:
        for key in ("queue", "dead_letter_queue", "source_exchange"):
            if key in item:
                raise doc.error(f"{key}: only for broker: rabbitmq", *at, key)
        values["stream"] = _str(item, "stream", doc, *at, required=True)
        values["subject"] = _str(item, "subject", doc, *at)
        values["durable"] = _str(item, "durable", doc, *at) or f"controltower-{name}".replace(".", "-")
        values["dead_letter_subject"] = _str(item, "dead_letter_subject", doc, *at)
        quarantine = _str(item, "quarantine", doc, *at) or f"controltower.quarantine.{name}"
        if values["subject"] and subject_matches(values["subject"], quarantine):
            raise doc.error(f"quarantine: {quarantine!r} matches the consumed subject {values['subject']!r}: "
                            "the tap would read its own quarantine", *at, "quarantine")
    values["quarantine"] = quarantine
    fmt = item.get("format", "canonical")
    if fmt not in FORMATS:
        raise doc.error(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}", *at, "format")
    values["format"] = fmt
    if fmt == "mapped":
        if "mapping" not in item:
            raise doc.error("format: mapped needs a mapping:", *at, "format")
        values["mapping"] = compile_mapping(item["mapping"], doc, *at, "mapping")
    elif "mapping" in item:
        raise doc.error("mapping: only with format: mapped", *at, "mapping")
    values["channel"] = _str(item, "channel", doc, *at)
    values["hop"] = _str(item, "hop", doc, *at)
    values["batch"] = _int(item.get("batch", 500), doc, 1, MAX_BATCH, *at, "batch")
    wait = _duration(item.get("batch_wait", "200ms"), doc, *at, "batch_wait")
    if not 0 < wait <= MAX_BATCH_WAIT:
        raise doc.error(f"batch_wait: expected more than 0 and at most {MAX_BATCH_WAIT:.0f}s", *at, "batch_wait")
    values["batch_wait_seconds"] = wait
    raw_store = item.get("raw_store", False)
    if not isinstance(raw_store, bool):
        raise doc.error(f"raw_store: expected true or false, got {raw_store!r}", *at, "raw_store")
    values["raw_store"] = raw_store
    for key in ("peek", "browse_dead_letters"):
        flag = item.get(key, True)
        if not isinstance(flag, bool):
            raise doc.error(f"{key}: expected true or false, got {flag!r}", *at, key)
        values[key] = flag
    milestone = _str(item, "dead_letter_milestone", doc, *at)
    if milestone is not None and not _MILESTONE.fullmatch(milestone):
        raise doc.error(f"dead_letter_milestone: {milestone!r} is not a milestone (flow.stage, e.g. order.erp_posted)",
                        *at, "dead_letter_milestone")
    values["dead_letter_milestone"] = milestone
    return TapConfig(**values)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, part in enumerate(p):
        if part == ">":
            return len(s) > i
        if i >= len(s) or (part != "*" and part != s[i]):
            return False
    return len(p) == len(s)
