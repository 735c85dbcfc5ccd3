"""The `replay:` section of taps.yaml: which flows may be replayed, what a replay produces, its guards.

Parsed in the core because both the dashboard (the guards of a request) and the collectors (the
executor) need it, and the core imports no room; the taps parser accepts the `replay:` key and
leaves it here. Errors are `file:line: what is wrong`. It reads no environment: endpoint URLs and
tokens are only *named* here (`url_env`, `token_env`) and resolved by the executor when it sends.

```yaml
replay:
  flows:
    order:      {produces: order.erp_posted, rate_per_minute: 60}
    refund:     {produces: return.refund_posted, approval: true, rate_per_minute: 10}
  endpoints:
    order: {url_env: CONTROLTOWER_REPLAY_ORDER_URL, token_env: CONTROLTOWER_REPLAY_ORDER_TOKEN}
  raw_store_days: 7
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controltower import yamlfile
from controltower.yamlfile import Located

MONEY_FLOWS = frozenset({"refund", "settlement", "credit"})  # approval defaults on for these
DEFAULT_RATE_PER_MINUTE = 60
DEFAULT_RAW_STORE_DAYS = 7
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MILESTONE = re.compile(r"[a-z0-9_-]+\.[a-z0-9_-]+")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FLOW_KEYS = {"produces", "approval", "rate_per_minute"}
_ENDPOINT_KEYS = {"url_env", "token_env"}
_TOP_KEYS = {"flows", "endpoints", "raw_store_days"}


@dataclass(frozen=True)
class FlowReplay:
    flow: str
    produces: str  # the milestone a successful replay leads to (the duplicate guard's test)
    approval: bool  # a second, different person must approve before it is sent
    rate_per_minute: int


@dataclass(frozen=True)
class Endpoint:
    """Where an HTTP replay of `flow` is POSTed: environment variable names, never the values."""

    flow: str
    url_env: str
    token_env: str | None = None


@dataclass(frozen=True)
class ReplayConfig:
    flows: dict[str, FlowReplay] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    raw_store_days: int = DEFAULT_RAW_STORE_DAYS
    source: str = "<none>"

    def flow(self, name: str) -> FlowReplay | None:
        return self.flows.get(name)


def load_replay(path: Path | str) -> ReplayConfig:
    """The `replay:` section of the taps file at `path` (an empty config when it has none)."""
    return parse_replay(yamlfile.load(path))


def loads_replay(text: str, source: str = "<string>") -> ReplayConfig:
    return parse_replay(yamlfile.loads(text, source))


def parse_replay(doc: Located) -> ReplayConfig:
    root = doc.data
    if root is None:
        return ReplayConfig(source=doc.source)
    if not isinstance(root, dict):
        raise doc.error("expected a mapping at the top (taps:, replay:)")
    section = root.get("replay")
    if section is None:
        return ReplayConfig(source=doc.source)
    if not isinstance(section, dict):
        raise doc.error("replay: expected a mapping (flows:, endpoints:, raw_store_days:)", "replay")
    _known(doc, section, _TOP_KEYS, ("replay",))
    flows = _flows(doc, section.get("flows") or {})
    endpoints = _endpoints(doc, section.get("endpoints") or {})
    days = section.get("raw_store_days", DEFAULT_RAW_STORE_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise doc.error(f"replay.raw_store_days: {days!r} is not a number of days (1 to 3650)",
                        "replay", "raw_store_days")
    return ReplayConfig(flows=flows, endpoints=endpoints, raw_store_days=days, source=doc.source)


def _known(doc: Located, data: dict[str, Any], allowed: set[str], path: tuple[Any, ...]) -> None:
    for key in data:
        if key not in allowed:
            where = ".".join(str(p) for p in (*path, key))
            raise doc.error(f"{where}: unknown key (expected one of {', '.join(sorted(allowed))})", *path, key)


def _flows(doc: Located, data: Any) -> dict[str, FlowReplay]:
    if not isinstance(data, dict):
        raise doc.error("replay.flows: expected a mapping of flow -> {produces, approval, rate_per_minute}",
                        "replay", "flows")
    out = {}
    for name, spec in data.items():
        path = ("replay", "flows", name)
        if not isinstance(name, str) or not _SLUG.fullmatch(name):
            raise doc.error(f"replay.flows: {name!r} is not a flow slug", *path)
        if not isinstance(spec, dict):
            raise doc.error(f"replay.flows.{name}: expected a mapping (produces, approval, rate_per_minute)", *path)
        _known(doc, spec, _FLOW_KEYS, path)
        produces = spec.get("produces")
        if not isinstance(produces, str) or not _MILESTONE.fullmatch(produces):
            raise doc.error(f"replay.flows.{name}.produces: {produces!r} is not a milestone (flow.stage, "
                            "e.g. order.erp_posted)", *path, "produces")
        approval = spec.get("approval", name in MONEY_FLOWS)
        if not isinstance(approval, bool):
            raise doc.error(f"replay.flows.{name}.approval: {approval!r} is not true or false", *path, "approval")
        rate = spec.get("rate_per_minute", DEFAULT_RATE_PER_MINUTE)
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 6000:
            raise doc.error(f"replay.flows.{name}.rate_per_minute: {rate!r} is not a whole number from 1 to 6000",
                            *path, "rate_per_minute")
        out[name] = FlowReplay(flow=name, produces=produces, approval=approval, rate_per_minute=rate)
    return out


def _endpoints(doc: Located, data: Any) -> dict[str, Endpoint]:
    if not isinstance(data, dict):
        raise doc.error("replay.endpoints: expected a mapping of flow -> {url_env, token_env}", "replay", "endpoints")
    out = {}
    for name, spec in data.items():
        path = ("replay", "endpoints", name)
        if not isinstance(spec, dict):
            raise doc.error(f"replay.endpoints.{name}: expected a mapping (url_env, token_env)", *path)
        if "url" in spec or "token" in spec:
            raise doc.error(f"replay.endpoints.{name}: name environment variables (url_env, token_env); "
                            "URLs and tokens never go in YAML", *path)
        _known(doc, spec, _ENDPOINT_KEYS, path)
        for key in ("url_env", "token_env"):
            value = spec.get(key)
            if (key == "url_env" or value is not None) and (not isinstance(value, str) or not _ENV.fullmatch(value)):
                raise doc.error(f"replay.endpoints.{name}.{key}: {value!r} is not an environment variable name",
                                *path, key)
        out[str(name)] = Endpoint(flow=str(name), url_env=spec["url_env"], token_env=spec.get("token_env"))
    return out
