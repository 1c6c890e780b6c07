"""Ports: what the service layer needs from the outside, as Protocols.

The real implementations live in ``hub.infra``; ``hub.service.memory`` holds in-memory
ones for fast unit tests. One behaviour suite runs against both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from hub.domain.model import CaseState, Event
from hub.domain.routing import PartnerProfile

T = TypeVar("T")


class StoreError(Exception):
    """The store could not complete a transaction, even after retrying its conflicts."""


@dataclass(frozen=True)
class Incoming:
    """One AMQP delivery as the service layer sees it."""

    body: bytes
    message_id: str | None
    type: str | None
    routing_key: str = ""
    user_id: str | None = None
    content_type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutMessage:
    """A message the hub will publish, recorded in the outbox with the change that caused it.

    A ``transient`` one is a reply that is safe to repeat (a document's content): it is
    never stored, as it may exceed what a database document holds; the consumer
    publishes it after the commit and acknowledges the request only once the broker has
    confirmed it, so a reply lost in a crash is answered again on redelivery. Its body
    may be read only then (``load``), so that a batch of them is never held at once.
    """

    message_id: str
    exchange: str  # logical name: claims.receipts, partners.out
    routing_key: str
    type: str
    body: bytes
    correlation_id: str | None = None
    created_at: dt.datetime | None = None
    transient: bool = False
    load: Callable[[], Awaitable[bytes]] | None = field(default=None, compare=False, repr=False)

    async def loaded(self) -> OutMessage:
        """This message with its body read (itself if there was nothing to read)."""
        if self.load is None:
            return self
        return replace(self, body=await self.load(), load=None)


@dataclass
class Changeset:
    """Everything one transaction writes. Built by the service, written by the store."""

    inbox: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    #: (new state, version it was loaded at; 0 for a new case)
    cases: list[tuple[CaseState, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outbox: list[OutMessage] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    #: Documents served to partners (the audit), one record per request (``_id``). A
    #: request answered again after a redelivery keeps its first record; the store
    #: counts the answers in ``answers``.
    downloads: list[dict[str, Any]] = field(default_factory=list)
    #: Transient replies (see ``OutMessage``): published after the commit, never stored.
    replies: list[OutMessage] = field(default_factory=list)
    #: (creditor id, batch id) -> {"expected": n, "accepted": n, ...} increments
    batch_counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        """How many documents the store writes for this changeset (replies are not stored)."""
        return (
            len(self.inbox)
            + len(self.claims)
            + len(self.cases)
            + len(self.events)
            + len(self.outbox)
            + len(self.rejections)
            + len(self.downloads)
            + len(self.batch_counts)
        )

    def count(self, creditor_id: str, batch_id: str, expected: int | None, status: str) -> None:
        entry = self.batch_counts.setdefault((creditor_id, batch_id), {})
        entry[status] = entry.get(status, 0) + 1
        entry["received"] = entry.get("received", 0) + 1
        if expected is not None:
            entry["expected"] = max(entry.get("expected", 0), expected)


class Tx(Protocol):
    """Reads inside one transaction."""

    async def seen(self, message_ids: Iterable[str]) -> set[str]: ...

    async def claims(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]: ...

    async def cases(self, case_ids: Iterable[str]) -> dict[str, CaseState]: ...


class Store(Protocol):
    async def transact(self, work: Callable[[Tx], Awaitable[Changeset]]) -> Changeset:
        """Run ``work`` and write its changeset atomically; retried on conflicts."""
        ...

    async def events(self, case_id: str) -> list[Event]: ...

    async def case(self, case_id: str) -> CaseState | None: ...

    async def mark_sent(self, message_ids: Sequence[str]) -> None: ...


class Publisher(Protocol):
    async def publish(self, messages: Sequence[OutMessage]) -> list[str]:
        """Publish with confirms; returns the ids the broker confirmed."""
        ...


class PartnerDirectory(Protocol):
    async def profiles(self) -> list[PartnerProfile]: ...

    def open_cases(self) -> Mapping[str, int]: ...

    def note_assigned(self, partner_id: str, delta: int = 1) -> None: ...


class Clock(Protocol):
    def __call__(self) -> dt.datetime: ...


def retry_delay(attempts: int) -> dt.timedelta:
    """How long an outbox entry the broker did not confirm waits before the relay tries it
    again: 2, 4, 8 ... seconds, at most 5 minutes. The wait keeps entries that cannot be
    routed (a creditor or partner without a queue) from holding back the others."""
    return dt.timedelta(seconds=min(2 ** max(attempts, 1), 300))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
