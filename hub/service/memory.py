"""In-memory implementations of the ports, for fast unit tests.

They keep the semantics of the MongoDB adapters in ``hub.infra.mongo``; the behaviour
suite in ``tests/store_contract.py`` runs against both stores to prove it:

* ``InMemoryStore.transact`` runs ``work`` against the committed state, then checks and
  applies its changeset in one step (no ``await`` in between, so it is atomic for every
  other coroutine): message ids are new to the inbox, each case is replaced at the version
  it was loaded at (a new case, loaded at 0, must not exist yet), event, outbox and
  rejection ids are new. A failed check is a conflict: ``work`` runs again from fresh
  reads, up to ``max_attempts`` times, then ``StoreError``. An exception from ``work``
  writes nothing and propagates.
* Reads inside a transaction yield to the event loop, as real I/O does, so concurrent
  transactions interleave and conflict the way they do against the server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.domain.model import WITH_PARTNER, CaseState, Event, Lifecycle
from hub.domain.routing import PartnerProfile
from hub.service.ports import (
    Changeset,
    Clock,
    OutMessage,
    StoreError,
    Tx,
    retry_delay,
    utcnow,
)

__all__ = [
    "FakeClock",
    "InMemoryCaseQueries",
    "InMemoryDocuments",
    "InMemoryPartnerDirectory",
    "InMemoryStore",
    "OutboxEntry",
    "StoreError",
]

_BATCH_TOTALS = ("received", "accepted", "duplicate", "amended", "withdrawn", "rejected")


class _Conflict(Exception):
    """The changeset no longer fits the committed state; retry the work from its reads."""


@dataclass
class OutboxEntry:
    """An outbox document: the message and its delivery bookkeeping."""

    message: OutMessage
    sent_at: dt.datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    retry_at: dt.datetime | None = None


class _MemoryTx:
    """Reads of one attempt: copies of what is committed when each read runs. Each read
    then yields, as a round trip to a server does, so that other transactions move on."""

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store

    async def seen(self, message_ids: Iterable[str]) -> set[str]:
        found = {i for i in set(message_ids) if i in self.store.inbox}
        await asyncio.sleep(0)
        return found

    async def claims(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        found = {
            k: copy.deepcopy(self.store.claims[k]) for k in set(keys) if k in self.store.claims
        }
        await asyncio.sleep(0)
        return found

    async def cases(self, case_ids: Iterable[str]) -> dict[str, CaseState]:
        found = {
            c: copy.deepcopy(self.store.cases[c]) for c in set(case_ids) if c in self.store.cases
        }
        await asyncio.sleep(0)
        return found


class InMemoryStore:
    """The ``Store`` port in memory, with the transaction semantics of ``MongoStore``.

    Its collections are public attributes so that tests can look inside.
    """

    def __init__(self, *, max_attempts: int = 20, clock: Clock = utcnow) -> None:
        self.max_attempts = max_attempts
        self.clock = clock
        self.conflicts = 0
        self.inbox: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, CaseState] = {}
        self.event_log: dict[str, Event] = {}
        self.outbox: dict[str, OutboxEntry] = {}
        self.rejections: dict[str, dict[str, Any]] = {}
        #: documents served to partners, by request (see ``Changeset.downloads``)
        self.download_log: dict[str, dict[str, Any]] = {}
        #: (creditor id, batch id) -> counts, ``expected`` and ``reconciled``
        self.batch_counts: dict[tuple[str, str], dict[str, Any]] = {}
        #: "<creditor>:<batch>" -> the reconciled totals
        self.batches: dict[str, dict[str, Any]] = {}

    # -- transactions -------------------------------------------------------------------

    async def transact(self, work: Callable[[Tx], Awaitable[Changeset]]) -> Changeset:
        for _attempt in range(1, self.max_attempts + 1):
            changes = await work(_MemoryTx(self))
            try:
                self._check(changes)
            except _Conflict:
                self.conflicts += 1
                await asyncio.sleep(0)
                continue
            self._apply(changes)
            return changes
        raise StoreError(f"transaction still conflicting after {self.max_attempts} attempts")

    def _check(self, c: Changeset) -> None:
        _unique("inbox", (d["_id"] for d in c.inbox), self.inbox)
        seen_cases: set[str] = set()
        for state, loaded in c.cases:
            if state.case_id in seen_cases:
                raise _Conflict(f"case {state.case_id} written twice in one changeset")
            seen_cases.add(state.case_id)
            current = self.cases.get(state.case_id)
            if loaded == 0:
                if current is not None:
                    raise _Conflict(f"case {state.case_id} was created meanwhile")
            elif current is None or current.version != loaded:
                raise _Conflict(f"case {state.case_id} changed meanwhile")
        _unique("events", (e.event_id for e in c.events), self.event_log)
        _unique("outbox", (o.message_id for o in c.outbox), self.outbox)
        _unique("rejections", (d["_id"] for d in c.rejections), self.rejections)

    def _apply(self, c: Changeset) -> None:
        for doc in c.inbox:
            self.inbox[doc["_id"]] = copy.deepcopy(doc)
        for doc in c.claims:
            self.claims[doc["_id"]] = copy.deepcopy(doc)
        for state, _loaded in c.cases:
            self.cases[state.case_id] = copy.deepcopy(state)
        for event in c.events:
            self.event_log[event.event_id] = copy.deepcopy(event)
        for out in c.outbox:
            self.outbox[out.message_id] = OutboxEntry(out)
        for doc in c.rejections:
            self.rejections[doc["_id"]] = copy.deepcopy(doc)
        for doc in c.downloads:
            served = self.download_log.setdefault(doc["_id"], copy.deepcopy(doc))
            served["answers"] = served.get("answers", 0) + 1
        for key, counts in c.batch_counts.items():
            entry = self.batch_counts.setdefault(key, {"reconciled": False})
            for name, n in counts.items():
                if name == "expected":
                    entry["expected"] = max(int(entry.get("expected", 0)), n)
                else:
                    entry[name] = int(entry.get(name, 0)) + n

    # -- reads outside transactions -----------------------------------------------------

    def case_queries(self) -> InMemoryCaseQueries:
        return InMemoryCaseQueries(lambda: self.cases.values())

    async def events(self, case_id: str) -> list[Event]:
        found = [e for e in self.event_log.values() if e.case_id == case_id]
        return [copy.deepcopy(e) for e in sorted(found, key=lambda e: e.seq)]

    async def case(self, case_id: str) -> CaseState | None:
        state = self.cases.get(case_id)
        return copy.deepcopy(state) if state is not None else None

    async def downloads(self, case_id: str) -> list[dict[str, Any]]:
        """Who downloaded which of a case's documents, and when (first answer first)."""
        found = [d for d in self.download_log.values() if d.get("case_id") == case_id]
        return copy.deepcopy(sorted(found, key=lambda d: d["served_at"]))

    # -- outbox ---------------------------------------------------------------------------

    async def mark_sent(self, message_ids: Sequence[str]) -> None:
        now = self.clock()
        for mid in message_ids:
            entry = self.outbox.get(mid)
            if entry is not None:
                entry.sent_at = now

    async def unsent(
        self,
        older_than: dt.datetime,
        limit: int = 1000,
        *,
        orphaned_before: dt.datetime | None = None,
    ) -> list[OutMessage]:
        """Unsent messages created before ``older_than``, oldest first. One process is the
        only writer here, so ``orphaned_before`` (other writers' entries) changes nothing."""
        pending = [
            e.message
            for e in self.outbox.values()
            if e.sent_at is None
            and e.message.created_at is not None
            and e.message.created_at < older_than
            and (e.retry_at is None or e.retry_at < older_than)
        ]
        pending.sort(key=lambda o: o.created_at or older_than)
        return pending[:limit]

    async def note_failed(self, message_ids: Sequence[str], error: str) -> None:
        for mid in message_ids:
            entry = self.outbox.get(mid)
            if entry is not None:
                entry.attempts += 1
                entry.last_error = error[:500]
                entry.retry_at = self.clock() + retry_delay(entry.attempts)

    # -- batches --------------------------------------------------------------------------

    async def open_batches(self) -> list[tuple[str, str]]:
        return sorted(k for k, v in self.batch_counts.items() if not v["reconciled"])

    async def reconcile(
        self,
        creditor_id: str,
        batch_id: str,
        build: Callable[[Mapping[str, int]], OutMessage],
    ) -> OutMessage | None:
        """When every message of a batch has been counted, record its summary once."""
        entry = self.batch_counts.get((creditor_id, batch_id))
        if entry is None:
            return None
        expected = int(entry.get("expected", 0))
        totals = {k: int(entry.get(k, 0)) for k in _BATCH_TOTALS}
        if expected == 0 or totals["received"] < expected:
            return None
        batch_key = f"{creditor_id}:{batch_id}"
        if batch_key in self.batches:
            return None  # reconciled before
        totals["expected"] = expected
        out = build(totals)
        if out.message_id in self.outbox:
            return None
        self.batches[batch_key] = {
            "creditor_id": creditor_id,
            "batch_id": batch_id,
            **totals,
            "reconciled_at": out.created_at,
        }
        self.outbox[out.message_id] = OutboxEntry(out)
        entry["reconciled"] = True
        return out


def _unique(what: str, ids: Iterable[str], existing: Mapping[str, Any]) -> None:
    new: set[str] = set()
    for i in ids:
        if i in existing or i in new:
            raise _Conflict(f"duplicate id {i!r} in {what}")
        new.add(i)


# --- documents ---------------------------------------------------------------------------


class InMemoryDocuments:
    """Documents by file id (``<case_id>/<document_id>``), like ``GridFSDocuments``."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self.clock = clock
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}

    async def put(
        self, file_id: str, data: bytes, *, filename: str, metadata: Mapping[str, Any]
    ) -> None:
        if file_id in self.files:
            return  # same id: an idempotent replay
        info = {
            "_id": file_id,
            "filename": filename,
            "length": len(data),
            "uploadDate": self.clock(),
            "metadata": dict(metadata),
        }
        self.files[file_id] = (info, bytes(data))

    async def info(self, file_id: str) -> dict[str, Any] | None:
        found = self.files.get(file_id)
        return copy.deepcopy(found[0]) if found is not None else None

    async def get(self, file_id: str) -> tuple[dict[str, Any], bytes] | None:
        found = self.files.get(file_id)
        if found is None:
            return None
        info, data = found
        return copy.deepcopy(info), data

    async def list_for_case(self, case_id: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(info)
            for info, _data in self.files.values()
            if info["metadata"].get("case_id") == case_id
        ]


# --- partners ----------------------------------------------------------------------------


class InMemoryPartnerDirectory:
    """Partner profiles and open-case counts, like ``MongoPartnerDirectory`` without a cache."""

    def __init__(
        self,
        profiles: Iterable[PartnerProfile] = (),
        open_cases: Mapping[str, int] | None = None,
    ) -> None:
        self._profiles = {p.partner_id: p for p in profiles}
        self._counts: dict[str, int] = dict(open_cases or {})

    async def profiles(self) -> list[PartnerProfile]:
        return list(self._profiles.values())

    def open_cases(self) -> Mapping[str, int]:
        return dict(self._counts)

    def note_assigned(self, partner_id: str, delta: int = 1) -> None:
        self._counts[partner_id] = self._counts.get(partner_id, 0) + delta

    async def upsert(self, profile: PartnerProfile) -> None:
        self._profiles[profile.partner_id] = profile

    def recount(self, cases: Iterable[CaseState]) -> None:
        """Open-case counts from the cases themselves, as the Mongo directory refreshes."""
        counts: dict[str, int] = {}
        for state in cases:
            if state.lifecycle in WITH_PARTNER and state.partner_id:
                counts[state.partner_id] = counts.get(state.partner_id, 0) + 1
        self._counts = counts


# --- time ----------------------------------------------------------------------------------


class FakeClock:
    """A settable clock: ``clock()`` is the current fake time (aware UTC)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)
        if self.now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, moment: dt.datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware moment")
        self.now = moment

    def advance(self, seconds: float) -> dt.datetime:
        self.now = self.now + dt.timedelta(seconds=seconds)
        return self.now


class InMemoryCaseQueries:
    """``CaseQueries`` over case states held in memory (e.g. ``InMemoryStore.cases``),
    with the semantics of ``MongoCaseQueries``."""

    def __init__(self, source: Callable[[], Iterable[CaseState]]) -> None:
        self.source = source

    def _sorted(self, keep: Callable[[CaseState], bool], limit: int) -> list[CaseState]:
        return sorted((s for s in self.source() if keep(s)), key=lambda s: s.case_id)[:limit]

    async def overdue(self, now: dt.datetime, limit: int) -> list[CaseState]:
        late = [
            s
            for s in self.source()
            if s.lifecycle is Lifecycle.ASSIGNED and s.accept_by is not None and s.accept_by < now
        ]
        return sorted(late, key=lambda s: (s.accept_by or now, s.case_id))[:limit]

    async def with_pending_settlements(self, limit: int) -> list[CaseState]:
        return self._sorted(lambda s: s.is_open and bool(s.pending_settlements), limit)

    async def find(self, text: str, limit: int) -> list[CaseState]:
        text = text.strip()
        if not text:
            return []
        folded = text.casefold()

        def match(s: CaseState) -> bool:
            name = str(s.debtor.get("name") or "")
            return s.case_id == text or text in s.claims or name.casefold().startswith(folded)

        return self._sorted(match, limit)

    async def list(
        self,
        *,
        lifecycle: str | None,
        partner_id: str | None,
        country: str | None,
        limit: int,
    ) -> list[CaseState]:
        return self._sorted(
            lambda s: (
                (lifecycle is None or s.lifecycle.value == lifecycle)
                and (partner_id is None or s.partner_id == partner_id)
                and (country is None or s.country == country.upper())
            ),
            limit,
        )
