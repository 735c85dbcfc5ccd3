"""HTTP routes of the alerts room (`/v1/alerts`, `/v1/incidents`), mounted by the wiring behind the web layer.

Reads need the `read` scope, acknowledging the `ingest` (write) scope, once keys are enforced:
the web layer's `require_scope` checks the key before the body is read; body limits, timeouts
and the storage-outage 503 are the web layer's too. `collectors(context)` is where this room
adds its metrics collectors (e.g. the time of the last successful evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from alerts.selfmetrics import AlertingCollector
from controltower.alertops import (
    INCIDENT_STATES,
    NoSuchIncident,
    acknowledge,
    acknowledge_incident,
    get_incident,
    list_alerts,
    list_incidents,
)
from controltower.context import AppContext
from controltower.errors import ControlTowerError
from controltower.vocab import rfc3339
from controltower.web import ORJSONResponse, acting_person, error, read_json, require_scope

FINGERPRINT = re.compile(r"[0-9a-f]{1,64}")
INCIDENT_ID = re.compile(r"[0-9]{1,18}")


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fingerprint": row["fingerprint"],
        "rule": row["rule"],
        "state": row["state"],
        "severity": row["severity"],
        "labels": row["labels"],
        "summary": row["summary"],
        "annotations": row["annotations"],
        "active_since": rfc3339(row["active_since"]),
        "firing_since": rfc3339(row["firing_since"]),
        "value": row["last_value"],
        "dashboard_url": row["dashboard_url"],
        "acknowledged": row["acknowledged_at"] is not None,
        "acknowledged_by": row["acknowledged_by"],
        "acknowledged_at": rfc3339(row["acknowledged_at"]),
        "last_evaluated_at": rfc3339(row["last_evaluated_at"]),
    }


def incident_json(row: Mapping[str, Any]) -> dict[str, Any]:
    impact = {k: v for k, v in dict(row.get("impact") or {}).items() if k != "by_alert"}
    out = {
        "id": row["id"], "key": row["key"], "state": row["state"], "title": row["title"], "cause": row["cause"],
        "severity": row["severity"], "summary": row["summary"], "channels": row["channels"], "impact": impact,
        "opened_at": rfc3339(row["opened_at"]), "acknowledged_at": rfc3339(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"], "resolved_at": rfc3339(row["resolved_at"]),
        "last_notified_at": rfc3339(row["last_notified_at"]),
    }
    if "alert_count" in row:
        out["alert_count"] = row["alert_count"]
    if "alerts" in row:
        out["alert_count"] = len(row["alerts"])
        out["alerts"] = [
            {"fingerprint": a["fingerprint"], "rule": a["rule"], "labels": a["labels"], "first": a["first"],
             "attached_at": rfc3339(a["attached_at"]), "state": a["state"], "summary": a["summary"],
             "dashboard_url": a["dashboard_url"]}
            for a in row["alerts"]
        ]
        out["timeline"] = [{"at": rfc3339(e["at"]), "kind": e["kind"], "text": e["text"]} for e in row["timeline"]]
    return out


def routes(context: AppContext) -> list[BaseRoute]:
    engine = context.engine

    @require_scope("read")
    async def get_alerts(request: Request) -> Response:
        rows = await run_in_threadpool(list_alerts, engine)
        return ORJSONResponse({"as_of": rfc3339(datetime.now(UTC)), "alerts": [alert_json(r) for r in rows]})

    @require_scope("ingest")  # acknowledging changes state: the write scope
    async def post_ack(request: Request) -> Response:
        fingerprint = request.path_params["fingerprint"]
        by = acting_person(await read_json(request))
        if by is None:
            return error(400, 'body must be JSON: {"by": "name"} with a string name')
        if not FINGERPRINT.fullmatch(fingerprint.lower()):
            return error(404, f"no pending or firing alert with fingerprint {fingerprint[:80]!r}")

        def run() -> Response:
            try:
                row = acknowledge(engine, fingerprint, by, datetime.now(UTC), via="http")
            except ControlTowerError as exc:
                return error(404, str(exc))
            return ORJSONResponse({"fingerprint": row["fingerprint"], "acknowledged_by": by})

        return await run_in_threadpool(run)

    @require_scope("read")
    async def get_incidents(request: Request) -> Response:
        given = "state" in request.query_params
        state = request.query_params.get("state", "")
        if given and state != "all" and state not in INCIDENT_STATES:  # `?state=` (empty) is an error too
            return error(400, f"state {state[:40]!r}: expected one of {', '.join(INCIDENT_STATES)} or all")
        states = INCIDENT_STATES if state == "all" else (state,) if state else ("open", "acknowledged")
        rows = await run_in_threadpool(list_incidents, engine, states)
        return ORJSONResponse({"as_of": rfc3339(datetime.now(UTC)), "incidents": [incident_json(r) for r in rows]})

    @require_scope("read")
    async def get_one_incident(request: Request) -> Response:
        raw = request.path_params["incident_id"]
        if not INCIDENT_ID.fullmatch(raw):
            return error(404, f"no incident {raw[:40]!r}")
        try:
            row = await run_in_threadpool(get_incident, engine, int(raw))
        except NoSuchIncident as exc:
            return error(404, str(exc))
        return ORJSONResponse(incident_json(row))

    @require_scope("ingest")  # acknowledging changes state: the write scope, as for alerts
    async def post_incident_ack(request: Request) -> Response:
        raw = request.path_params["incident_id"]
        by = acting_person(await read_json(request))
        if by is None:
            return error(400, 'body must be JSON: {"by": "name"} with a string name')
        if not INCIDENT_ID.fullmatch(raw):
            return error(404, f"no open incident {raw[:40]!r}")

        def run() -> Response:
            try:
                row = acknowledge_incident(engine, int(raw), by, datetime.now(UTC), via="http")
            except ControlTowerError as exc:
                return error(404, str(exc))
            return ORJSONResponse({"id": row["id"], "state": row["state"], "acknowledged_by": row["acknowledged_by"]})

        return await run_in_threadpool(run)

    return [
        Route("/v1/alerts", get_alerts, methods=["GET"]),
        Route("/v1/alerts/{fingerprint}/ack", post_ack, methods=["POST"]),
        Route("/v1/incidents", get_incidents, methods=["GET"]),
        Route("/v1/incidents/{incident_id}", get_one_incident, methods=["GET"]),
        Route("/v1/incidents/{incident_id}/ack", post_incident_ack, methods=["POST"]),
    ]


def collectors(context: AppContext) -> list[Collector]:
    """This room's contributions to `/metrics`: whether alerting runs (last success, failing rules)."""
    return [AlertingCollector(context.engine)]
