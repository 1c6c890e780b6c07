"""One behaviour suite for every implementation of the ``Store`` port.

``InMemoryStore`` (``tests/unit/test_store_memory.py``) and ``MongoStore`` on the real
server (``tests/integration/test_store_mongo.py``) subclass :class:`StoreContract`, give
it a ``store`` fixture and the exception the store raises when it gives up, and must
behave alike: the in-memory store is only worth its speed if it keeps the same promises.

The suite only uses the port (and the outbox / batch methods the worker uses), never a
store's internals, so a third implementation can be checked the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pytest

from hub.domain import lifecycle
from hub.domain.model import CaseState, Event, EventKind, case_id_for, fold
from hub.service import outgoing
from hub.service.ports import Changeset, OutMessage, Tx, retry_delay
from partner_sdk import messages as m
from tests.support import claim_body

# Whole seconds: MongoDB keeps datetimes to the millisecond.
T0 = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)
FAR = T0 + dt.timedelta(days=3650)
CREDITOR = "flexspace"


class ContractStore(Protocol):
    """What the suite needs: the ``Store`` port plus the outbox relay's and batches' part."""

    max_attempts: int

    async def transact(self, work: Callable[[Tx], Awaitable[Changeset]]) -> Changeset: ...

    async def events(self, case_id: str) -> list[Event]: ...

    async def case(self, case_id: str) -> CaseState | None: ...

    async def mark_sent(self, message_ids: Sequence[str]) -> None: ...

    async def unsent(self, older_than: dt.datetime, limit: int = 1000) -> list[OutMessage]: ...

    async def note_failed(self, message_ids: Sequence[str], error: str) -> None: ...

    async def open_batches(self) -> list[tuple[str, str]]: ...

    async def downloads(self, case_id: str) -> list[dict[str, Any]]: ...

    async def reconcile(
        self, creditor_id: str, batch_id: str, build: Callable[[Mapping[str, int]], OutMessage]
    ) -> OutMessage | None: ...


# --- building blocks ------------------------------------------------------------------------


def claim(n: int, *, debtor: int = 1) -> m.ClaimPlaced:
    return m.ClaimPlaced.model_validate_json(json.dumps(claim_body(n, debtor=debtor)))


def case_of(debtor: int = 1) -> str:
    c = claim(1, debtor=debtor)
    return case_id_for(c.creditor_entity, c.debtor.model_dump())


def claim_doc(c: m.ClaimPlaced, case_id: str) -> dict[str, Any]:
    return {
        "_id": c.business_key,
        "case_id": case_id,
        "status": "open",
        "content_hash": f"h{c.invoice_number}",
        "updated_at": T0,
    }


def out(message_id: str, created_at: dt.datetime = T0) -> OutMessage:
    return OutMessage(
        message_id=message_id,
        exchange=outgoing.RECEIPTS,
        routing_key=f"{CREDITOR}.claim.receipt",
        type=m.ClaimReceipt.TYPE,
        body=b'{"k": "' + message_id.encode() + b'"}',
        correlation_id=None,
        created_at=created_at,
    )


def add_claim_changes(
    state: CaseState | None, case_id: str, n: int, *, message_id: str | None = None
) -> Changeset:
    """What intake writes for one accepted claim: inbox, claim, case, event, receipt."""
    mid = message_id or f"msg-{case_id}-{n}"
    c = claim(n)
    events = lifecycle.add_claim(state, case_id, c, message_id=mid, now=T0)
    new = fold(events, state)
    assert new is not None
    return Changeset(
        inbox=[{"_id": mid, "queue": "hub.claims", "received_at": T0}],
        claims=[claim_doc(c, case_id)],
        cases=[(new, state.version if state else 0)],
        events=events,
        outbox=[out(f"rcpt:{mid}")],
    )


def fixed(changes: Changeset) -> Callable[[Tx], Awaitable[Changeset]]:
    async def work(tx: Tx) -> Changeset:
        return changes

    return work


class Gate:
    """Holds the first attempt of ``n`` concurrent transactions until all have read, so
    that they really overlap; gives up waiting after ``patience`` s (a store that runs
    transactions one at a time must not deadlock the suite)."""

    def __init__(self, n: int, patience: float = 2.0) -> None:
        self.n = n
        self.patience = patience
        self.arrived = 0
        self.all_here = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.n:
            self.all_here.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_here.wait(), self.patience)


@dataclass
class Attempts:
    """What each attempt of a work read: the version of the case it decided on."""

    loaded: list[int] = field(default_factory=list)


def build_reconciliation(creditor: str, batch: str) -> Callable[[Mapping[str, int]], OutMessage]:
    def build(totals: Mapping[str, int]) -> OutMessage:
        return outgoing.batch_reconciled(
            m.BatchReconciled(
                creditor_id=creditor,
                batch_id=batch,
                expected=totals["expected"],
                received=totals["received"],
                accepted=totals["accepted"],
                duplicate=totals["duplicate"],
                amended=totals["amended"],
                withdrawn=totals["withdrawn"],
                rejected=totals["rejected"],
                completed_at=T0,
            )
        )

    return build


# --- the suite ------------------------------------------------------------------------------


class StoreContract:
    """The behaviour every store promises. Subclasses provide ``store`` and ``store_error``."""

    store_error: ClassVar[type[Exception]]

    @pytest.fixture
    async def store(self) -> AsyncIterator[ContractStore]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    # -- atomicity ----------------------------------------------------------------------

    async def test_a_changeset_is_written_whole(self, store: ContractStore) -> None:
        cid = case_of()
        changes = add_claim_changes(None, cid, 1, message_id="m1")
        changes.rejections.append({"_id": "claim:bad-1", "message_id": "bad-1"})
        changes.count(CREDITOR, "B1", 5, "accepted")
        assert await store.transact(fixed(changes)) is changes

        async def read(tx: Tx) -> Changeset:
            assert await tx.seen(["m1", "m2"]) == {"m1"}
            claims = await tx.claims(["FS-DE-001/INV-000001", "FS-DE-001/INV-000404"])
            assert list(claims) == ["FS-DE-001/INV-000001"]
            assert claims["FS-DE-001/INV-000001"]["case_id"] == cid
            assert await tx.cases([cid, "C-NONE"]) == {cid: changes.cases[0][0]}
            return Changeset()

        await store.transact(read)
        assert await store.case(cid) == changes.cases[0][0]
        assert await store.events(cid) == changes.events
        assert [o.message_id for o in await store.unsent(FAR)] == ["rcpt:m1"]
        assert await store.open_batches() == [(CREDITOR, "B1")]

    async def test_reads_of_nothing_are_empty(self, store: ContractStore) -> None:
        async def read(tx: Tx) -> Changeset:
            assert await tx.seen([]) == set()
            assert await tx.claims([]) == {}
            assert await tx.cases([]) == {}
            assert await tx.cases(["C-NONE"]) == {}
            return Changeset()

        assert await store.transact(read) == Changeset()
        assert await store.case("C-NONE") is None
        assert await store.events("C-NONE") == []
        assert await store.unsent(FAR) == []
        assert await store.open_batches() == []

    async def test_work_that_raises_writes_nothing(self, store: ContractStore) -> None:
        cid = case_of()
        runs = 0

        async def work(tx: Tx) -> Changeset:
            nonlocal runs
            runs += 1
            await tx.seen(["m1"])
            await tx.cases([cid])
            raise LookupError("the work failed")

        with pytest.raises(LookupError):
            await store.transact(work)
        assert runs == 1, "a failure of the work is not a conflict: no retry"
        assert await store.case(cid) is None
        assert await store.events(cid) == []
        assert await store.unsent(FAR) == []
        assert await store.transact(fixed(add_claim_changes(None, cid, 1, message_id="m1")))
        assert (await store.case(cid)) is not None

    async def test_a_changeset_that_keeps_conflicting_writes_nothing(
        self, store: ContractStore
    ) -> None:
        cid = case_of()
        first = add_claim_changes(None, cid, 1)
        await store.transact(fixed(first))
        state = first.cases[0][0]
        stale = add_claim_changes(state, cid, 2, message_id="m-stale")
        stale.cases = [(stale.cases[0][0], state.version + 7)]  # a version never stored
        runs = 0

        async def work(tx: Tx) -> Changeset:
            nonlocal runs
            runs += 1
            return stale

        with pytest.raises(self.store_error):
            await store.transact(work)
        assert runs == store.max_attempts
        assert await store.case(cid) == state
        assert [e.seq for e in await store.events(cid)] == [1]
        assert [o.message_id for o in await store.unsent(FAR)] == [f"rcpt:msg-{cid}-1"]

        async def check(tx: Tx) -> Changeset:
            assert await tx.seen(["m-stale"]) == set()
            assert list(await tx.claims(["FS-DE-001/INV-000002"])) == []
            return Changeset()

        await store.transact(check)

    # -- inbox ------------------------------------------------------------------------------

    async def test_seen_reports_the_recorded_message_ids(self, store: ContractStore) -> None:
        await store.transact(fixed(Changeset(inbox=[{"_id": "a"}, {"_id": "b"}])))

        async def read(tx: Tx) -> Changeset:
            assert await tx.seen(["a", "c", "b", "a"]) == {"a", "b"}
            assert await tx.seen(["c"]) == set()
            return Changeset()

        await store.transact(read)

    async def test_a_message_id_is_recorded_once(self, store: ContractStore) -> None:
        """Two transactions race on one message id: one records it, the other's retry
        sees it and writes nothing."""
        gate = Gate(2)
        runs: list[str] = []

        async def handle(tag: str) -> Changeset:
            first = True

            async def work(tx: Tx) -> Changeset:
                nonlocal first
                runs.append(tag)
                seen = await tx.seen(["dup"])
                if first:
                    first = False
                    await gate.wait()
                if "dup" in seen:
                    return Changeset()
                return Changeset(inbox=[{"_id": "dup", "by": tag}], outbox=[out(f"o-{tag}")])

            return await store.transact(work)

        results = await asyncio.gather(handle("x"), handle("y"))
        assert sorted(len(r.inbox) for r in results) == [0, 1]
        assert len(runs) >= 3, "the loser must run again"
        assert len(await store.unsent(FAR)) == 1

    # -- cases --------------------------------------------------------------------------------

    async def test_concurrent_changes_to_one_case_are_all_applied(
        self, store: ContractStore
    ) -> None:
        """A replace at a stale version conflicts and the work runs again on fresh reads:
        no update is lost, the versions run 1..n without a gap."""
        cid = case_of()
        await store.transact(fixed(add_claim_changes(None, cid, 1)))
        writers = 5
        gate = Gate(writers)

        async def add(n: int) -> Attempts:
            attempts = Attempts()

            async def work(tx: Tx) -> Changeset:
                state = (await tx.cases([cid]))[cid]
                attempts.loaded.append(state.version)
                if len(attempts.loaded) == 1:
                    await gate.wait()
                return add_claim_changes(state, cid, n)

            await store.transact(work)
            return attempts

        results = await asyncio.gather(*(add(n) for n in range(2, 2 + writers)))
        state = await store.case(cid)
        assert state is not None
        assert state.version == 1 + writers
        assert sorted(state.claims) == [f"INV-{n:06d}" for n in range(1, 2 + writers)]
        events = await store.events(cid)
        assert [e.seq for e in events] == list(range(1, 2 + writers))
        assert fold(events) == state
        # each committed on what it last read, and those were all different versions
        assert sorted(a.loaded[-1] for a in results) == list(range(1, 1 + writers))
        assert sum(len(a.loaded) for a in results) > writers, "nobody had to retry"
        receipts = {o.message_id for o in await store.unsent(FAR)}
        assert receipts == {f"rcpt:msg-{cid}-{n}" for n in range(1, 2 + writers)}

    async def test_a_new_case_must_not_exist_yet(self, store: ContractStore) -> None:
        cid = case_of()
        await store.transact(fixed(add_claim_changes(None, cid, 1)))
        again = add_claim_changes(None, cid, 2, message_id="m-again")
        again.events = []  # only the case insert can conflict here
        with pytest.raises(self.store_error):
            await store.transact(fixed(again))
        state = await store.case(cid)
        assert state is not None
        assert list(state.claims) == ["INV-000001"]

    async def test_two_new_cases_racing_one_wins_the_other_rereads(
        self, store: ContractStore
    ) -> None:
        cid = case_of()
        gate = Gate(2)

        async def place(n: int) -> Attempts:
            attempts = Attempts()

            async def work(tx: Tx) -> Changeset:
                state = (await tx.cases([cid])).get(cid)
                attempts.loaded.append(state.version if state else 0)
                if len(attempts.loaded) == 1:
                    await gate.wait()
                return add_claim_changes(state, cid, n)

            await store.transact(work)
            return attempts

        results = await asyncio.gather(place(1), place(2))
        assert sorted(a.loaded[-1] for a in results) == [0, 1]
        state = await store.case(cid)
        assert state is not None
        assert state.version == 2
        assert sorted(state.claims) == ["INV-000001", "INV-000002"]

    async def test_a_case_reads_back_as_written(self, store: ContractStore) -> None:
        cid = case_of()
        first = add_claim_changes(None, cid, 1)
        state = first.cases[0][0]
        later = T0 + dt.timedelta(hours=2)
        events = [
            *lifecycle.assign(state, "acme-de", sla_hours=24, now=T0),
        ]
        state2 = fold(events, state)
        assert state2 is not None
        accepted = m.CaseAccepted(case_id=cid, occurred_at=T0)
        more = lifecycle.report(state2, "acme-de", accepted, message_id="acc", now=later)
        state3 = fold(more, state2)
        assert state3 is not None
        proposal = m.SettlementProposed(
            case_id=cid, occurred_at=later, settlement_id="S1", amount="900", currency="EUR"
        )
        last = lifecycle.report(state3, "acme-de", proposal, message_id="s1", now=later)
        final = fold(last, state3)
        assert final is not None
        first.cases = [(final, 0)]
        first.events = [*first.events, *events, *more, *last]
        await store.transact(fixed(first))
        assert await store.case(cid) == final
        stored = await store.events(cid)
        assert [(e.seq, e.kind) for e in stored] == [
            (1, EventKind.CLAIM_ADDED),
            (2, EventKind.ASSIGNED),
            (3, EventKind.ACCEPTED),
            (4, EventKind.SETTLEMENT_PROPOSED),
        ]
        assert fold(stored) == final

    # -- events -------------------------------------------------------------------------------

    async def test_duplicate_event_ids_conflict(self, store: ContractStore) -> None:
        cid = case_of()
        first = add_claim_changes(None, cid, 1)
        await store.transact(fixed(first))
        twin = Changeset(
            inbox=[{"_id": "m-twin"}], events=list(first.events), outbox=[out("o-twin")]
        )
        with pytest.raises(self.store_error):
            await store.transact(fixed(twin))
        assert len(await store.events(cid)) == 1

        async def check(tx: Tx) -> Changeset:
            assert await tx.seen(["m-twin"]) == set()
            return Changeset()

        await store.transact(check)
        assert "o-twin" not in {o.message_id for o in await store.unsent(FAR)}

    async def test_events_come_back_in_sequence_order(self, store: ContractStore) -> None:
        cid = case_of()
        changes = add_claim_changes(None, cid, 1)
        state = changes.cases[0][0]
        for n in range(2, 6):
            step = lifecycle.add_claim(state, cid, claim(n), message_id=f"m{n}", now=T0)
            state = fold(step, state) or state
            changes.events.extend(step)
        changes.events.reverse()
        changes.cases = [(state, 0)]
        await store.transact(fixed(changes))
        assert [e.seq for e in await store.events(cid)] == [1, 2, 3, 4, 5]
        assert await store.events(case_of(debtor=2)) == []

    # -- outbox -------------------------------------------------------------------------------

    async def test_outbox_unsent_and_mark_sent(self, store: ContractStore) -> None:
        second = dt.timedelta(seconds=1)
        messages = [out("o2", T0 + 2 * second), out("o0", T0), out("o1", T0 + second)]
        await store.transact(fixed(Changeset(outbox=messages)))

        assert [o.message_id for o in await store.unsent(T0)] == []
        assert [o.message_id for o in await store.unsent(T0 + second)] == ["o0"]
        assert [o.message_id for o in await store.unsent(FAR)] == ["o0", "o1", "o2"]
        assert [o.message_id for o in await store.unsent(FAR, limit=2)] == ["o0", "o1"]
        assert (await store.unsent(FAR))[0] == messages[1]

        await store.mark_sent(["o1", "unknown"])
        await store.mark_sent([])
        assert [o.message_id for o in await store.unsent(FAR)] == ["o0", "o2"]
        await store.note_failed(["o0"], "publish not confirmed")
        await store.note_failed([], "nothing")
        assert [o.message_id for o in await store.unsent(FAR)] == ["o0", "o2"]
        await store.mark_sent(["o0", "o2"])
        assert await store.unsent(FAR) == []

    async def test_a_failed_entry_waits_and_lets_the_others_go_first(
        self, store: ContractStore
    ) -> None:
        second = dt.timedelta(seconds=1)
        await store.transact(fixed(Changeset(outbox=[out("stuck", T0), out("next", T0 + second)])))
        await store.note_failed(["stuck"], "publish not confirmed")
        now = dt.datetime.now(dt.UTC)
        assert [o.message_id for o in await store.unsent(now, limit=1)] == ["next"]
        later = now + retry_delay(1) + second
        assert [o.message_id for o in await store.unsent(later)] == ["stuck", "next"]
        await store.note_failed(["stuck"], "publish not confirmed")  # waits longer now
        assert [o.message_id for o in await store.unsent(later)] == ["next"]
        assert retry_delay(2) > retry_delay(1) and retry_delay(60) == dt.timedelta(minutes=5)

    async def test_an_outbox_id_is_written_once(self, store: ContractStore) -> None:
        await store.transact(fixed(Changeset(outbox=[out("o1")])))
        with pytest.raises(self.store_error):
            await store.transact(fixed(Changeset(inbox=[{"_id": "m"}], outbox=[out("o1")])))

        async def check(tx: Tx) -> Changeset:
            assert await tx.seen(["m"]) == set()
            return Changeset()

        await store.transact(check)

    # -- downloads ----------------------------------------------------------------------------

    async def test_a_download_answered_again_is_recorded_once(self, store: ContractStore) -> None:
        second = dt.timedelta(seconds=1)

        def served(request: str, at: dt.datetime) -> Changeset:
            record = {"_id": request, "case_id": "C-1", "document_id": "D-1", "served_at": at}
            reply = dataclasses.replace(out(f"doc:{request}"), transient=True)
            return Changeset(downloads=[record], replies=[reply])

        await store.transact(fixed(served("partner:acme-de:r1", T0)))
        await store.transact(fixed(served("partner:acme-de:r1", T0 + second)))  # redelivered
        await store.transact(fixed(served("partner:acme-de:r2", T0 + 2 * second)))
        found = await store.downloads("C-1")
        assert [(d["_id"], d["served_at"], d["answers"]) for d in found] == [
            ("partner:acme-de:r1", T0, 2),
            ("partner:acme-de:r2", T0 + 2 * second, 1),
        ]
        assert await store.downloads("C-2") == []
        assert await store.unsent(FAR) == []  # a transient reply is never stored

    # -- batches ------------------------------------------------------------------------------

    async def test_a_batch_is_reconciled_once_complete(self, store: ContractStore) -> None:
        built: list[dict[str, int]] = []
        build = build_reconciliation(CREDITOR, "B1")

        def recording(totals: Mapping[str, int]) -> OutMessage:
            built.append(dict(totals))
            return build(totals)

        first = Changeset()
        first.count(CREDITOR, "B1", 4, "accepted")
        first.count(CREDITOR, "B1", 4, "duplicate")
        first.count(CREDITOR, "OTHER", None, "accepted")  # no size: never complete
        await store.transact(fixed(first))
        assert await store.open_batches() == [(CREDITOR, "B1"), (CREDITOR, "OTHER")]
        assert await store.reconcile(CREDITOR, "B1", recording) is None
        assert await store.reconcile(CREDITOR, "OTHER", recording) is None
        assert await store.reconcile(CREDITOR, "NEVER-SEEN", recording) is None

        rest = Changeset()
        rest.count(CREDITOR, "B1", 4, "rejected")
        rest.count(CREDITOR, "B1", None, "amended")
        await store.transact(fixed(rest))
        summary = await store.reconcile(CREDITOR, "B1", recording)
        assert summary is not None
        assert summary.message_id == f"batch:{CREDITOR}:B1"
        body = m.BatchReconciled.model_validate_json(summary.body)
        assert (body.expected, body.received, body.accepted, body.duplicate) == (4, 4, 1, 1)
        assert (body.amended, body.rejected, body.withdrawn) == (1, 1, 0)
        assert built[-1]["expected"] == 4

        assert await store.reconcile(CREDITOR, "B1", recording) is None
        assert await store.open_batches() == [(CREDITOR, "OTHER")]
        unsent = [o.message_id for o in await store.unsent(FAR)]
        assert unsent == [f"batch:{CREDITOR}:B1"]

    async def test_concurrent_reconciles_summarise_a_batch_once(self, store: ContractStore) -> None:
        counts = Changeset()
        for status in ("accepted", "accepted", "rejected"):
            counts.count(CREDITOR, "B2", 3, status)
        await store.transact(fixed(counts))
        build = build_reconciliation(CREDITOR, "B2")
        results = await asyncio.gather(*(store.reconcile(CREDITOR, "B2", build) for _ in range(4)))
        assert len([r for r in results if r is not None]) == 1
        assert await store.reconcile(CREDITOR, "B2", build) is None
        assert [o.message_id for o in await store.unsent(FAR)] == [f"batch:{CREDITOR}:B2"]
        assert await store.open_batches() == []
