"""HTTP routes of the exception work queue: `GET /v1/exceptions`, `GET /v1/exceptions/{id}` and
`POST /v1/exceptions/{id}/{assign|comment|tag|snooze|resolve|reopen}`.

Reads need the `read` scope; actions the `ingest` (write) scope, as acknowledging an alert.
Every action goes through `controltower.exceptionops` with the body's `by` (default "api")
and `via="http"`, so it is audited like the dashboard's and the CLI's. Auth, body limits and
the outage 503 are the web layer's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from controltower import exceptionops
from controltower.context import AppContext
from controltower.errors import ConfigError, ControlTowerError
from controltower.masking import Masker
from controltower.maskrules import MaskingRules
from controltower.settings import parse_duration
from controltower.vocab import rfc3339
from controltower.web import ORJSONResponse, acting_person, error, read_json, require_scope

GROUP_ID = re.compile(r"[0-9]{1,18}")
FILTERS = ("state", "channel", "class", "assignee", "limit")
ACTIONS = ("assign", "comment", "tag", "snooze", "resolve", "reopen")


def group_json(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        "id": row["id"], "state": row["state"], "class": row["class"], "channel": row["channel"],
        "milestone": row["milestone"], "error_code": row["error_code"] or None, "message": row["message"],
        "sample_message": row["sample_message"], "occurrence_count": row["occurrence_count"],
        "open_count": row["open_count"], "first_seen_at": rfc3339(row["first_seen_at"]),
        "last_seen_at": rfc3339(row["last_seen_at"]), "opened_at": rfc3339(row["opened_at"]),
        "assignee": row["assignee"], "tags": list(row["tags"]), "snoozed_until": rfc3339(row["snoozed_until"]),
        "resolved_at": rfc3339(row["resolved_at"]), "resolved_by": row["resolved_by"], "resolution": row["resolution"],
        "resolution_note": row["resolution_note"], "reopen_count": row["reopen_count"],
    }
    if "occurrences" in row:
        out["occurrences"] = [
            {"correlation_id": o["correlation_id"], "source": o["source"], "event_id": o["event_id"],
             "at": rfc3339(o["at"]), "first_at": rfc3339(o["first_at"]), "count": o["count"], "awaits": list(o["awaits"]),
             "error_code": o["error_code"], "message": o["message"], "resolved_at": rfc3339(o["resolved_at"])}
            for o in row["occurrences"]]
        out["actions"] = [{"at": rfc3339(a["at"]), "actor": a["actor"], "action": a["action"], "via": a["via"],
                           "detail": a["detail"]} for a in row["actions"]]
    return out


def _text(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or (required and not value.strip()):
        return None
    return value


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        return None
    return value


def _until(body: Mapping[str, Any], now: datetime) -> datetime | str:
    """When a snooze ends: `until` (RFC 3339 with offset) or `for` (a duration); or what is wrong."""
    if isinstance(body.get("until"), str):
        try:
            until = datetime.fromisoformat(body["until"].replace("Z", "+00:00"))
        except ValueError:
            return "until: expected an RFC 3339 time with offset"
        if until.tzinfo is None:
            return "until: expected an RFC 3339 time with offset"
    elif isinstance(body.get("for"), str):
        try:
            until = now + timedelta(seconds=parse_duration(body["for"], where="for"))
        except (ConfigError, OverflowError) as exc:
            return str(exc)[:200]
    else:
        return 'body must name "until" (RFC 3339) or "for" (a duration such as 4h)'
    if until > now + exceptionops.MAX_SNOOZE:
        return f"a snooze lasts at most {exceptionops.MAX_SNOOZE.days} days"
    return until


def routes(context: AppContext) -> list[BaseRoute]:
    engine = context.engine
    masker = Masker(MaskingRules.for_settings(context.settings))

    @require_scope("read")
    async def get_groups(request: Request) -> Response:
        params = request.query_params
        for key in params:
            if key not in FILTERS:
                return error(400, f"unknown query parameter {key[:40]!r} (expected {', '.join(FILTERS)})")
        state = params.get("state", "active")
        states = {"active": exceptionops.ACTIVE, "all": exceptionops.STATES}.get(state, (state,))
        if any(s not in exceptionops.STATES for s in states):
            return error(400, f"state {state[:40]!r}: expected one of open, snoozed, resolved, active, all")
        limit = params.get("limit", "200")
        if not limit.isascii() or not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return error(400, f"limit: {limit[:40]!r} is not a whole number from 1 to 1000")

        def run() -> list[dict[str, Any]]:
            return exceptionops.list_groups(engine, states=states, channel=params.get("channel") or None,
                                            cls=params.get("class") or None, assignee=params.get("assignee") or None,
                                            limit=int(limit))

        rows = await run_in_threadpool(run)
        return ORJSONResponse({"as_of": rfc3339(datetime.now(UTC)), "exceptions": [group_json(r) for r in rows]})

    @require_scope("read")
    async def get_one(request: Request) -> Response:
        raw = request.path_params["group_id"]
        if not GROUP_ID.fullmatch(raw):
            return error(404, f"no exception group {raw[:40]!r}")
        try:
            row = await run_in_threadpool(exceptionops.get_group, engine, int(raw))
        except exceptionops.NoSuchGroup as exc:
            return error(404, str(exc))
        return ORJSONResponse(group_json(row))

    def call(body: Mapping[str, Any], action: str, group_id: int, by: str, now: datetime) -> Callable[[], Any] | str:
        """The action as a call, or what is wrong with the body."""
        if action == "assign":
            who = _text(body, "assignee")
            return "assignee: expected a string (empty: unassign)" if who is None else (
                lambda: exceptionops.assign(engine, group_id, who, by, now, via="http"))
        if action == "comment":
            text = _text(body, "text", required=True)
            return "text: expected a non-empty string" if text is None else (
                lambda: exceptionops.comment(engine, group_id, text, by, now, masker=masker, via="http"))
        if action == "tag":
            add, remove = _tags(body.get("add")), _tags(body.get("remove"))
            return "add and remove: expected lists of strings" if add is None or remove is None else (
                lambda: exceptionops.tag(engine, group_id, by, now, add=add, remove=remove, via="http"))
        if action == "snooze":
            until = _until(body, now)
            return until if isinstance(until, str) else (
                lambda: exceptionops.snooze(engine, group_id, until, by, now, via="http"))
        if action == "resolve":
            note = _text(body, "note")
            return "note: expected a string" if note is None else (
                lambda: exceptionops.resolve(engine, group_id, note, by, now, via="http", masker=masker))
        return lambda: exceptionops.reopen(engine, group_id, by, now, via="http")

    @require_scope("ingest")  # actions change state: the write scope, as acknowledging an alert
    async def post_action(request: Request) -> Response:
        raw, action = request.path_params["group_id"], request.path_params["action"]
        if action not in ACTIONS:
            return error(404, f"no action {action[:40]!r} (expected {', '.join(ACTIONS)})")
        body = await read_json(request)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        by = acting_person(body)
        if by is None:
            return error(400, 'by: expected a string name ({"by": "name"})')
        if not GROUP_ID.fullmatch(raw):
            return error(404, f"no exception group {raw[:40]!r}")
        todo = call(body, action, int(raw), by, datetime.now(UTC))
        if isinstance(todo, str):
            return error(400, todo)

        def run() -> Response:
            try:
                todo()
                row = exceptionops.get_group(engine, int(raw))
            except exceptionops.NoSuchGroup as exc:
                return error(404, str(exc))
            except exceptionops.BadAction as exc:
                return error(400, str(exc)[:300])
            except ControlTowerError as exc:
                return error(409, str(exc)[:300])
            return ORJSONResponse(group_json(row))

        return await run_in_threadpool(run)

    return [
        Route("/v1/exceptions", get_groups, methods=["GET"]),
        Route("/v1/exceptions/{group_id}", get_one, methods=["GET"]),
        Route("/v1/exceptions/{group_id}/{action}", post_action, methods=["POST"]),
    ]
