"""Hostile input to the exception actions: control characters, the job's own name, far snoozes,
ids out of range; through the core, the CLI and the HTTP API."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest

from controltower import exceptionops
from controltower.errors import ControlTowerError
from controltower.masking import Masker
from tests.metrics.helpers import NOW
from tests.metrics.test_exceptions_actions import cli, seed
from tests.metrics.test_exceptions_grouping import groups


def test_names_and_tags_are_one_line_and_the_jobs_name_is_reserved(engine, settings) -> None:
    gid = seed(engine, settings)
    exceptionops.assign(engine, gid, "robin\n\x1b[31mroot", "dana\r\nadmin", NOW)
    g = groups(engine)[0]
    assert g["assignee"] == "robin [31mroot"  # the escape character is gone, the rest is text
    exceptionops.tag(engine, gid, "dana", NOW, add=["erp\nprod"])
    assert groups(engine)[0]["tags"] == ["erp prod"]
    with pytest.raises(ControlTowerError, match="reserved"):
        exceptionops.resolve(engine, gid, "looks automatic", "ControlTower", NOW)
    comment = exceptionops.get_group(engine, gid)
    assert [a["actor"] for a in comment["actions"]] == ["dana admin", "dana"]
    # a comment keeps its lines
    exceptionops.comment(engine, gid, "line one\nline two", "dana", NOW, masker=Masker())
    assert exceptionops.get_group(engine, gid)["actions"][-1]["detail"]["text"] == "line one\nline two"


def test_a_snooze_is_bounded_wherever_it_comes_from(engine, settings) -> None:
    gid = seed(engine, settings)
    with pytest.raises(ControlTowerError, match="90 days"):
        exceptionops.snooze(engine, gid, NOW.replace(year=9999), "dana", NOW)
    with pytest.raises(ControlTowerError, match="future"):
        exceptionops.snooze(engine, gid, NOW - timedelta(minutes=1), "dana", NOW)
    assert groups(engine)[0]["state"] == "open"


def test_ids_out_of_range_are_no_such_group(engine, settings, tmp_path, database_url) -> None:
    seed(engine, settings)
    for gid in (2**70, -1, 0):
        with pytest.raises(exceptionops.NoSuchGroup):
            exceptionops.get_group(engine, gid)
        with pytest.raises(exceptionops.NoSuchGroup):
            exceptionops.assign(engine, gid, "robin", "dana", NOW)
    result = cli(tmp_path, database_url, "show", str(2**70))
    assert result.exit_code == 1 and "no exception group" in result.output, result.output


def test_resolving_twice_at_once_resolves_once(engine, settings) -> None:
    gid = seed(engine, settings)
    outcomes: list[str] = []

    def resolve(who: str) -> None:
        try:
            exceptionops.resolve(engine, gid, "done", who, NOW)
            outcomes.append("ok")
        except ControlTowerError:
            outcomes.append("refused")

    threads = [threading.Thread(target=resolve, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert [a["action"] for a in exceptionops.get_group(engine, gid)["actions"]] == ["resolve"]


def test_http_bad_input_is_400_and_state_conflicts_409(engine, settings, collector) -> None:
    gid = seed(engine, settings)
    with httpx.Client(base_url=collector.url) as client:
        past = (NOW - timedelta(days=3650)).isoformat()
        assert client.post(f"/v1/exceptions/{gid}/snooze", json={"until": past}).status_code == 400
        assert client.post(f"/v1/exceptions/{gid}/resolve", json={"by": "controltower"}).status_code == 400
        assert client.post(f"/v1/exceptions/{gid}/tag", json={"add": [f"t{i}" for i in range(30)]}).status_code == 400
        assert client.post(f"/v1/exceptions/{2**70}/assign", json={"assignee": "x"}).status_code == 404
        assert client.get("/v1/exceptions/-1").status_code == 404
        assert client.get("/v1/exceptions/abc").status_code == 404
        assert client.post(f"/v1/exceptions/{gid}/comment", content=b"x" * 200_000).status_code in (400, 413)
        assert client.post(f"/v1/exceptions/{gid}/resolve", json={"by": "sam"}).status_code == 200
        assert client.post(f"/v1/exceptions/{gid}/snooze", json={"for": "1h"}).status_code == 409  # resolved
