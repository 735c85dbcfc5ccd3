"""One batch of broker messages into the store, deciding which messages go to quarantine.

`store_batch` decodes every message, writes all their records in one `EventStore.ingest`
(one transaction), and returns which messages must be quarantined and why: one that could not
be decoded or mapped, or a record of which the store rejected. The good records of the same
batch land all the same. A write the database refuses for a reason other than being away (a
value it cannot hold) is retried message by message, so one poison message cannot block a
queue. StorageUnavailable propagates untouched: the caller then acknowledges nothing.
It never talks to a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa

from collectors.taps.config import TapConfig
from collectors.taps.messages import Message, records_of

log = logging.getLogger(__name__)


class Store(Protocol):
    def ingest(self, records: Sequence[Any], *, source: str, now: datetime,
               errors: dict[int, str] | None = None) -> Any: ...


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    quarantine: list[tuple[Message, str]] = field(default_factory=list)


Keep = Callable[[list[tuple[Message, list[dict[str, Any]]]], datetime], None]


def store_batch(messages: Sequence[Message], tap: TapConfig, store: Store, *, now: datetime,
                keep: Keep | None = None) -> BatchResult:
    """`keep`, when given (a tap with raw_store: true), receives each readable message with its
    records before they are stored: the originals are committed first, so an acknowledged message
    always has its original (a redelivery keeps the first)."""
    result = BatchResult()
    records: list[dict[str, Any]] = []
    owners: list[int] = []
    problems: dict[int, str] = {}
    for index, message in enumerate(messages):
        decoded = records_of(message, tap)
        if decoded.problem:
            problems[index] = decoded.problem
        records += decoded.records
        owners += [index] * len(decoded.records)
    if keep is not None and records:
        keep([(messages[i], [r for r, o in zip(records, owners, strict=True) if o == i])
              for i in sorted(set(owners))], now)
    if records:
        _write(records, owners, messages, tap, store, now, result, problems)
    result.quarantine = [(messages[i], problems[i]) for i in sorted(problems)]
    return result


def _write(records: list[dict[str, Any]], owners: list[int], messages: Sequence[Message], tap: TapConfig,
           store: Store, now: datetime, result: BatchResult, problems: dict[int, str]) -> None:
    try:
        outcome = store.ingest(records, source=tap.source, now=now)
    except (sa.exc.DBAPIError, psycopg.Error) as exc:  # not StorageUnavailable: the database refused a value
        first, last = owners[0], owners[-1]
        if first == last:
            orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            problems.setdefault(first, f"the store refused the message: {type(orig).__name__}: "
                                       f"{str(orig).strip().splitlines()[0] if str(orig).strip() else ''}")
            log.warning("tap %s: a message the database refused goes to quarantine", tap.name)
            return
        for owner in sorted(set(owners)):  # find the poison message: each on its own
            mine = [i for i, o in enumerate(owners) if o == owner]
            _write([records[i] for i in mine], [owner] * len(mine), messages, tap, store, now, result, problems)
        return
    result.stored += outcome.accepted
    result.duplicates += outcome.duplicates
    for index, error in outcome.rejected:
        owner = owners[index]
        position = index - owners.index(owner)
        problems.setdefault(owner, f"record {position}: {error}" if owners.count(owner) > 1 else error)
