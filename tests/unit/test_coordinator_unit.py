"""The coordinator's commands on the in-memory ports: what each writes and sends, and
that a refusal changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest

from hub.domain.errors import IllegalTransition, InvalidCommand, UnknownCase
from hub.domain.model import EventKind, Lifecycle
from hub.domain.routing import PartnerProfile
from hub.service import outgoing
from hub.service.coordinator import Coordinator
from hub.service.intake import IntakeService
from hub.service.memory import (
    FakeClock,
    InMemoryCaseQueries,
    InMemoryDocuments,
    InMemoryPartnerDirectory,
    InMemoryStore,
)
from hub.service.ports import Incoming, OutMessage
from hub.service.updates import UpdatesService
from partner_sdk import messages as m
from tests.support import claim_body

T0 = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)
A, B, FR = "acme-de", "berlin-de", "gallia-fr"


@dataclass
class World:
    clock: FakeClock
    store: InMemoryStore
    partners: InMemoryPartnerDirectory
    intake: IntakeService
    updates: UpdatesService
    coordinator: Coordinator


def make_world(*profiles: PartnerProfile) -> World:
    clock = FakeClock(T0)
    store = InMemoryStore(clock=clock)
    partners = InMemoryPartnerDirectory(
        profiles
        or [
            PartnerProfile(A, frozenset({"DE"}), sla_hours=24),
            PartnerProfile(B, frozenset({"DE"}), sla_hours=48),
            PartnerProfile(FR, frozenset({"FR"})),
        ]
    )
    return World(
        clock,
        store,
        partners,
        IntakeService(store, partners, clock=clock),
        UpdatesService(store, partners, InMemoryDocuments(clock), clock=clock),
        Coordinator(
            store, partners, clock, queries=InMemoryCaseQueries(lambda: store.cases.values())
        ),
    )


@pytest.fixture
def world() -> World:
    return make_world()


async def place(world: World, n: int = 1, country: str = "DE", **kw: Any) -> str:
    """A claim from the creditor through intake; returns the case id."""
    body = claim_body(n, country=country, **kw)
    [receipt] = [
        o
        for o in await world.intake.handle(
            [Incoming(json.dumps(body).encode(), f"claim-{n}", "claim.placed", "claim.placed")]
        )
        if o.type == m.ClaimReceipt.TYPE
    ]
    case_id = m.ClaimReceipt.model_validate_json(receipt.body).case_id
    assert case_id is not None
    return case_id


async def report(world: World, sender: str, msg: m.Message, mid: str) -> list[OutMessage]:
    return await world.updates.handle(
        [Incoming(msg.to_json(), mid, msg.TYPE, f"{sender}.{msg.TYPE}", user_id=sender)]
    )


def by_type(outbox: list[OutMessage]) -> dict[str, OutMessage]:
    return {o.type: o for o in outbox}


def snapshot(world: World) -> tuple[object, ...]:
    return (dict(world.store.cases), dict(world.store.event_log), dict(world.store.outbox))


# --- reassign ------------------------------------------------------------------------------


async def test_reassign_recalls_and_places_with_another_partner(world: World) -> None:
    case_id = await place(world)
    first = world.store.cases[case_id]
    old = first.partner_id
    assert old in (A, B)
    new = B if old == A else A
    counts = dict(world.partners.open_cases())
    world.clock.advance(3600)

    outbox = await world.coordinator.reassign(case_id, reason="silent", actor="kam-anna")

    state = world.store.cases[case_id]
    assert (state.lifecycle, state.partner_id, state.assignments) == (
        Lifecycle.ASSIGNED,
        new,
        2,
    )
    assert state.assigned_at == world.clock()
    sent = by_type(outbox)
    assert set(sent) == {"case.recalled", "case.assigned"}
    recalled = sent["case.recalled"]
    assert recalled.routing_key == f"{old}.case.recalled"
    assert recalled.message_id == f"rcl:{first.assignment_id}"
    assert m.CaseRecalled.model_validate_json(recalled.body).reason == "silent"
    assigned = sent["case.assigned"]
    assert assigned.routing_key == f"{new}.case.assigned"
    assert m.CaseAssigned.model_validate_json(assigned.body).assignment_id == state.assignment_id
    assert all(o.message_id in world.store.outbox for o in outbox)
    events = await world.store.events(case_id)
    assert [(e.kind, e.actor) for e in events[-2:]] == [
        (EventKind.RECALLED, "kam-anna"),
        (EventKind.ASSIGNED, "kam-anna"),
    ]
    assert world.partners.open_cases()[old] == counts[old] - 1
    assert world.partners.open_cases()[new] == counts.get(new, 0) + 1


async def test_reassign_with_no_other_partner_leaves_the_case_unassigned() -> None:
    world = make_world(PartnerProfile(A, frozenset({"DE"})))
    case_id = await place(world)
    outbox = await world.coordinator.reassign(case_id, reason="quality")
    assert [o.type for o in outbox] == ["case.recalled"]
    state = world.store.cases[case_id]
    assert state.lifecycle is Lifecycle.UNASSIGNED and state.partner_id is None
    assert world.partners.open_cases()[A] == 0

    # from the unassigned inbox the coordinator may still choose that firm by hand
    outbox = await world.coordinator.reassign(case_id, to_partner=A, reason="by hand")
    assert [o.routing_key for o in outbox] == [f"{A}.case.assigned"]
    assert world.store.cases[case_id].partner_id == A


async def test_reassign_places_a_case_waiting_for_a_partner(world: World) -> None:
    case_id = await place(world, country="IT")
    assert world.store.cases[case_id].lifecycle is Lifecycle.UNASSIGNED
    await world.partners.upsert(PartnerProfile("italia-it", frozenset({"IT"})))
    outbox = await world.coordinator.reassign(case_id)
    assert [o.routing_key for o in outbox] == ["italia-it.case.assigned"]
    assert world.store.cases[case_id].partner_id == "italia-it"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nobody", "there is no partner nobody"),
        (FR, "does not cover DE"),
        ("sleepy-de", "is not active"),
        ("same", "already with"),
    ],
)
async def test_reassign_to_an_unfit_partner_changes_nothing(target: str, message: str) -> None:
    world = make_world(
        PartnerProfile(A, frozenset({"DE"})),
        PartnerProfile(FR, frozenset({"FR"})),
        PartnerProfile("sleepy-de", frozenset({"DE"}), active=False),
    )
    case_id = await place(world)
    target = A if target == "same" else target
    before = snapshot(world)
    with pytest.raises(InvalidCommand, match=message):
        await world.coordinator.reassign(case_id, to_partner=target)
    assert snapshot(world) == before


async def test_reassign_refuses_a_closed_or_unknown_case(world: World) -> None:
    case_id = await place(world)
    withdraw = {
        "creditor_id": "flexspace",
        "creditor_entity": "FS-DE-001",
        "invoice_number": "INV-000001",
    }
    await world.intake.handle(
        [Incoming(json.dumps(withdraw).encode(), "w-1", "claim.withdrawn", "claim.withdrawn")]
    )
    assert world.store.cases[case_id].lifecycle is Lifecycle.CLOSED
    before = snapshot(world)
    with pytest.raises(IllegalTransition, match="closed"):
        await world.coordinator.reassign(case_id)
    with pytest.raises(UnknownCase):
        await world.coordinator.reassign("C-0000000000000000")
    assert snapshot(world) == before


async def test_reassign_racing_a_partner_report_stays_consistent(world: World) -> None:
    """The coordinator's transaction and the partner's both load the case at one version;
    the store lets one commit and retries the other from fresh reads."""
    case_id = await place(world)
    old = world.store.cases[case_id]
    accept = m.CaseAccepted(
        case_id=case_id, assignment_id=old.assignment_id, occurred_at=world.clock()
    )
    assert old.partner_id is not None
    reassigned, replies = await asyncio.gather(
        world.coordinator.reassign(case_id, reason="race"),
        report(world, old.partner_id, accept, "acc-1"),
    )
    state = world.store.cases[case_id]
    assert state.lifecycle is Lifecycle.ASSIGNED and state.partner_id != old.partner_id
    events = await world.store.events(case_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    accepted = any(e.kind is EventKind.ACCEPTED for e in events)
    refused = [o for o in replies if o.type == m.ErrorReply.TYPE]
    assert accepted != bool(refused)  # applied before the recall, or refused after it
    assert {o.type for o in reassigned} == {"case.recalled", "case.assigned"}


# --- recall ---------------------------------------------------------------------------------


async def test_recall_takes_the_case_back_without_placing_it(world: World) -> None:
    case_id = await place(world)
    old = world.store.cases[case_id]
    outbox = await world.coordinator.recall(case_id, reason="paid to us", actor="flexspace")
    [msg] = outbox
    assert msg.routing_key == f"{old.partner_id}.case.recalled"
    state = world.store.cases[case_id]
    assert state.lifecycle is Lifecycle.RECALLED and state.partner_id is None
    assert world.partners.open_cases()[str(old.partner_id)] == 0
    with pytest.raises(IllegalTransition):
        await world.coordinator.recall(case_id, reason="again")
    with pytest.raises(UnknownCase):
        await world.coordinator.recall("C-0000000000000000", reason="x")


# --- settlements ----------------------------------------------------------------------------


async def accepted_with_offer(world: World, *settlements: str) -> str:
    case_id = await place(world)
    state = world.store.cases[case_id]
    pid = str(state.partner_id)
    now = world.clock()
    await report(
        world,
        pid,
        m.CaseAccepted(case_id=case_id, assignment_id=state.assignment_id, occurred_at=now),
        "acc",
    )
    for sid in settlements:
        offer = m.SettlementProposed(
            case_id=case_id, settlement_id=sid, amount="700", currency="EUR", occurred_at=now
        )
        await report(world, pid, offer, f"offer-{sid}")
    return case_id


async def test_decide_settlement_records_and_tells_the_partner(world: World) -> None:
    case_id = await accepted_with_offer(world, "S-1", "S-2")
    pid = world.store.cases[case_id].partner_id
    pending = await world.coordinator.pending_settlements()
    assert [(c, d["settlement_id"]) for c, d in pending] == [(case_id, "S-1"), (case_id, "S-2")]
    assert pending[0][1]["partner_id"] == pid and pending[0][1]["amount"] == "700"
    assert pending[0][1]["case_total"] == str(world.store.cases[case_id].total)

    world.clock.advance(60)
    [msg] = await world.coordinator.decide_settlement(
        case_id, "S-1", approved=False, decided_by="kam-anna", note="too low"
    )
    assert msg.routing_key == f"{pid}.settlement.decided"
    assert msg.message_id == f"std:{case_id}:S-1"
    assert msg.exchange == outgoing.PARTNERS_OUT
    body = m.SettlementDecided.model_validate_json(msg.body)
    assert (body.decision, body.decided_by, body.note, body.decided_at) == (
        "rejected",
        "kam-anna",
        "too low",
        world.clock(),
    )
    assert list(world.store.cases[case_id].pending_settlements) == ["S-2"]
    event = (await world.store.events(case_id))[-1]
    assert event.kind is EventKind.SETTLEMENT_DECIDED and event.actor == "kam-anna"

    before = snapshot(world)
    with pytest.raises(InvalidCommand, match="not waiting"):
        await world.coordinator.decide_settlement(case_id, "S-1", approved=True, decided_by="x")
    with pytest.raises(InvalidCommand, match="who decided"):
        await world.coordinator.decide_settlement(case_id, "S-2", approved=True, decided_by=" ")
    assert snapshot(world) == before


# --- queries -------------------------------------------------------------------------------


async def test_overdue_are_assigned_cases_past_their_deadline(world: World) -> None:
    first = await place(world, 1)
    second = await place(world, 2, debtor=2)
    deadlines = {world.store.cases[c].accept_by for c in (first, second)}
    assert all(d is not None for d in deadlines)
    assert await world.coordinator.overdue(T0 + dt.timedelta(hours=1)) == []
    latest = max(d for d in deadlines if d is not None)
    late = await world.coordinator.overdue(latest + dt.timedelta(seconds=1))
    assert {s.case_id for s in late} == {first, second}
    world.clock.set(latest + dt.timedelta(seconds=1))
    assert len(await world.coordinator.overdue()) == 2  # defaults to the clock
    # an accepted case is not overdue
    state = world.store.cases[first]
    accept = m.CaseAccepted(case_id=first, occurred_at=world.clock())
    await report(world, str(state.partner_id), accept, "acc-1")
    assert [s.case_id for s in await world.coordinator.overdue()] == [second]


async def test_show_as_of_either_axis(world: World) -> None:
    case_id = await accepted_with_offer(world)
    world.clock.advance(3600)
    state = world.store.cases[case_id]
    # the partner tells at T0 + 2 h of a call it made at T0 + 30 min
    world.clock.advance(3600)
    call = m.CaseActivity(
        case_id=case_id,
        kind=m.ActivityKind.CALL,
        outcome=m.ActivityOutcome.RIGHT_PARTY_CONTACT,
        occurred_at=T0 + dt.timedelta(minutes=30),
    )
    await report(world, str(state.partner_id), call, "call-1")

    now, events = await world.coordinator.show(case_id)
    assert now is not None and now.lifecycle is Lifecycle.IN_PROGRESS
    assert events[-1].kind is EventKind.ACTIVITY
    moment = T0 + dt.timedelta(hours=1)
    known, known_events = await world.coordinator.show(case_id, moment, "recorded")
    assert known is not None and known.lifecycle is Lifecycle.ACCEPTED
    assert len(known_events) == len(events) - 1
    happened, happened_events = await world.coordinator.show(case_id, moment, "occurred")
    assert happened is not None and happened.lifecycle is Lifecycle.IN_PROGRESS
    assert happened_events == events
    assert await world.coordinator.show(case_id, T0 - dt.timedelta(days=1)) == (None, [])
    assert await world.coordinator.show("C-0000000000000000") == (None, [])
    with pytest.raises(InvalidCommand, match="axis"):
        await world.coordinator.show(case_id, moment, "sideways")


async def test_find_and_list(world: World) -> None:
    de = await place(world, 1)
    fr = await place(world, 2, country="FR", debtor=2)
    name = str(world.store.cases[de].debtor["name"])  # "Debtor 1 Ltd"
    assert [s.case_id for s in await world.coordinator.find(de)] == [de]
    assert [s.case_id for s in await world.coordinator.find("INV-000002")] == [fr]
    assert [s.case_id for s in await world.coordinator.find(name[:8].lower())] == [de]
    assert {s.case_id for s in await world.coordinator.find("debtor")} == {de, fr}
    assert await world.coordinator.find("Debtor (") == []
    assert await world.coordinator.find("  ") == []
    fr_cases = await world.coordinator.list_cases(country="fr")
    assert [s.case_id for s in fr_cases] == [fr]
    assert await world.coordinator.list_cases(lifecycle="closed") == []
    with pytest.raises(InvalidCommand, match="status"):
        await world.coordinator.list_cases(lifecycle="lost")


def test_a_store_without_case_queries_needs_them_passed() -> None:
    class BareStore:
        pass

    with pytest.raises(TypeError, match="queries"):
        Coordinator(BareStore(), InMemoryPartnerDirectory())  # type: ignore[arg-type]
    # the in-memory store brings its own
    assert isinstance(
        Coordinator(InMemoryStore(), InMemoryPartnerDirectory()).queries, InMemoryCaseQueries
    )
