"""The case state machine (``hub.domain.lifecycle``): every transition of DOMAIN.md's
lifecycle allowed or refused, exclusivity, recall, phases, money, and history as of any
moment on both time axes."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from hub.domain import lifecycle
from hub.domain.errors import (
    DomainError,
    IllegalTransition,
    InvalidCommand,
    NotAssignee,
    UnknownLegalStep,
)
from hub.domain.model import (
    AWAITING_PLACEMENT,
    WITH_PARTNER,
    CaseState,
    Event,
    EventKind,
    Lifecycle,
    as_of,
    case_id_for,
    fold,
)
from hub.domain.routing import PartnerProfile
from hub.service.placement import place
from partner_sdk import messages as m
from partner_sdk.messages import Phase
from tests.support import claim_body

L = Lifecycle
T0 = dt.datetime(2026, 10, 1, 9, 0, tzinfo=dt.UTC)
PID = "acme-de"
OTHER = "other-de"


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def claim(n: int = 1, *, debtor: int = 1, **changes: Any) -> m.ClaimPlaced:
    body = claim_body(n, debtor=debtor)
    body.update(changes)
    return m.ClaimPlaced.model_validate_json(json.dumps(body))


@dataclass
class Story:
    """A case told event by event: each step is decided on the current state, then folded."""

    events: list[Event] = field(default_factory=list)
    states: list[CaseState] = field(default_factory=list)
    clock: float = 0.0

    @property
    def state(self) -> CaseState:
        return self.states[-1]

    def now(self) -> dt.datetime:
        self.clock += 1
        return at(self.clock)

    def do(self, events: list[Event]) -> Story:
        for event in events:
            self.events.append(event)
            new = fold([event], self.states[-1] if self.states else None)
            assert new is not None
            self.states.append(new)
        return self

    def report(self, msg: m.Message, sender: str = PID) -> Story:
        return self.do(
            lifecycle.report(
                self.state, sender, msg, message_id=f"m{len(self.events)}", now=self.now()
            )
        )


def new_case(*claims: m.ClaimPlaced) -> Story:
    claims = claims or (claim(),)
    story = Story()
    case_id = case_id_for(claims[0].creditor_entity, claims[0].debtor.model_dump())
    for c in claims:
        state = story.state if story.states else None
        story.do(lifecycle.add_claim(state, case_id, c, message_id=f"c-{c.invoice_number}", now=T0))
    return story


# --- partner reports, one factory per report (and dispute status) ---------------------------


def _pdf() -> dict[str, Any]:
    data = b"%PDF-1.4 letter before action"
    return {
        "document_id": "D1",
        "kind": "letter",
        "filename": "letter.pdf",
        "content_type": "application/pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_base64": base64.b64encode(data).decode(),
    }


Report = Callable[[CaseState, dt.datetime], m.Message]

REPORTS: dict[str, Report] = {
    "case.accepted": lambda s, t: m.CaseAccepted(case_id=s.case_id, occurred_at=t),
    "case.declined": lambda s, t: m.CaseDeclined(
        case_id=s.case_id, occurred_at=t, reason="conflict of interest"
    ),
    "case.activity": lambda s, t: m.CaseActivity(
        case_id=s.case_id,
        occurred_at=t,
        kind=m.ActivityKind.CALL,
        outcome=m.ActivityOutcome.RIGHT_PARTY_CONTACT,
    ),
    "case.promise": lambda s, t: m.CasePromise(
        case_id=s.case_id, occurred_at=t, amount="100.00", currency="EUR", due_date=t.date()
    ),
    "case.payment": lambda s, t: m.CasePayment(
        case_id=s.case_id, occurred_at=t, amount="100.00", currency="EUR"
    ),
    "settlement.proposed": lambda s, t: m.SettlementProposed(
        case_id=s.case_id, occurred_at=t, settlement_id="S1", amount="800.00", currency="EUR"
    ),
    "case.dispute/opened": lambda s, t: m.CaseDispute(
        case_id=s.case_id, occurred_at=t, status="opened", reason="invoice contested"
    ),
    "case.dispute/resolved": lambda s, t: m.CaseDispute(
        case_id=s.case_id, occurred_at=t, status="resolved", reason="credit note issued"
    ),
    "case.legal_step": lambda s, t: m.CaseLegalStep(
        case_id=s.case_id, occurred_at=t, country="DE", step="mahnbescheid", phase=Phase.LEGAL
    ),
    "document.added": lambda s, t: m.DocumentAdded.model_validate(
        {"case_id": s.case_id, "occurred_at": t, **_pdf()}, strict=False
    ),
    "case.closed": lambda s, t: m.CaseClosed(
        case_id=s.case_id, occurred_at=t, close_code=m.CloseCode.PAID
    ),
}

A, IP, OH = L.ACCEPTED, L.IN_PROGRESS, L.ON_HOLD
# DOMAIN.md's lifecycle: report -> {lifecycle it is allowed in: lifecycle it leads to}.
ALLOWED: dict[str, dict[Lifecycle, Lifecycle]] = {
    "case.accepted": {L.ASSIGNED: A},
    "case.declined": {L.ASSIGNED: L.DECLINED},
    "case.activity": {A: IP, IP: IP, OH: OH},
    "case.promise": {A: IP, IP: IP},
    "case.payment": {A: IP, IP: IP, OH: OH},
    "settlement.proposed": {A: IP, IP: IP, OH: OH},
    "case.dispute/opened": {A: OH, IP: OH},
    "case.dispute/resolved": {OH: IP},
    "case.legal_step": {A: IP, IP: IP},
    "document.added": {A: A, IP: IP, OH: OH, L.CLOSED: L.CLOSED},
    "case.closed": {A: L.CLOSED, IP: L.CLOSED, OH: L.CLOSED},
}
assert set(ALLOWED) == set(REPORTS)


def reach(target: Lifecycle) -> Story:
    """A case brought to ``target`` the way it really gets there."""
    story = new_case()
    if target is L.NEW:
        return story
    if target is L.UNASSIGNED:
        return story.do(lifecycle.leave_unassigned(story.state, reason="nobody", now=at(0.5)))
    story.do(lifecycle.assign(story.state, PID, sla_hours=24, now=at(0.5)))
    if target is L.ASSIGNED:
        return story
    if target is L.DECLINED:
        return story.report(REPORTS["case.declined"](story.state, story.now()))
    story.report(REPORTS["case.accepted"](story.state, story.now()))
    if target is L.ACCEPTED:
        return story
    if target is L.RECALLED:
        return story.do(lifecycle.recall(story.state, reason="creditor", now=at(9), actor="cr"))
    story.report(REPORTS["case.activity"](story.state, story.now()))
    if target is L.IN_PROGRESS:
        return story
    if target is L.ON_HOLD:
        return story.report(REPORTS["case.dispute/opened"](story.state, story.now()))
    assert target is L.CLOSED
    return story.report(REPORTS["case.closed"](story.state, story.now()))


@pytest.mark.parametrize("target", list(Lifecycle))
def test_every_lifecycle_is_reachable(target: Lifecycle) -> None:
    assert reach(target).state.lifecycle is target


TABLE = [(lc, name) for lc in Lifecycle for name in REPORTS]


@pytest.mark.parametrize(("current", "report"), TABLE, ids=[f"{a}-{b}" for a, b in TABLE])
def test_report_by_the_assignee_in_every_lifecycle(current: Lifecycle, report: str) -> None:
    """The guard alone: the sender is the case's partner, only the lifecycle varies."""
    state = reach(L.ACCEPTED).state.replace(lifecycle=current)
    msg = REPORTS[report](state, at(20))
    expected = ALLOWED[report].get(current)
    if expected is None:
        with pytest.raises(IllegalTransition) as refused:
            lifecycle.report(state, PID, msg, message_id="x", now=at(21))
        assert refused.value.case_id == state.case_id
        assert refused.value.code == "illegal_transition"
        return
    events = lifecycle.report(state, PID, msg, message_id="x", now=at(21))
    assert len(events) == 1
    assert events[0].seq == state.version + 1
    assert events[0].actor == PID
    assert events[0].message_id == "x"
    assert events[0].occurred_at == at(20)
    assert events[0].recorded_at == at(21)
    after = fold(events, state)
    assert after is not None
    assert after.lifecycle is expected
    assert after.version == state.version + 1


@pytest.mark.parametrize(("current", "report"), TABLE, ids=[f"{a}-{b}" for a, b in TABLE])
def test_report_on_a_reached_case(current: Lifecycle, report: str) -> None:
    """Reached for real: a case with no partner refuses every report as not the assignee's."""
    state = reach(current).state
    msg = REPORTS[report](state, at(20))
    expected = ALLOWED[report].get(current)
    if expected is not None:
        after = fold(lifecycle.report(state, PID, msg, message_id="x", now=at(21)), state)
        assert after is not None
        assert after.lifecycle is expected
        return
    error = IllegalTransition if state.partner_id == PID else NotAssignee
    with pytest.raises(error):
        lifecycle.report(state, PID, msg, message_id="x", now=at(21))


@pytest.mark.parametrize("report", sorted(REPORTS))
@pytest.mark.parametrize("current", sorted(WITH_PARTNER))
def test_a_foreign_partner_is_not_the_assignee(current: Lifecycle, report: str) -> None:
    state = reach(current).state
    with pytest.raises(NotAssignee) as refused:
        lifecycle.report(state, OTHER, REPORTS[report](state, at(20)), message_id="x", now=at(21))
    assert refused.value.code == "not_assignee"
    assert OTHER in refused.value.message


def test_a_report_for_an_old_assignment_is_refused() -> None:
    story = reach(L.ASSIGNED)
    old = story.state.assignment_id
    story.report(REPORTS["case.declined"](story.state, story.now()))
    story.do(lifecycle.assign(story.state, PID, sla_hours=24, now=story.now()))
    assert story.state.assignment_id != old
    stale = m.CaseAccepted(case_id=story.state.case_id, occurred_at=at(30), assignment_id=old)
    with pytest.raises(IllegalTransition):
        lifecycle.report(story.state, PID, stale, message_id="x", now=at(31))
    fresh = stale.model_copy(update={"assignment_id": story.state.assignment_id})
    story.report(fresh)
    assert story.state.lifecycle is L.ACCEPTED


def test_a_non_report_message_is_an_invalid_command() -> None:
    state = reach(L.ACCEPTED).state
    recalled = m.CaseRecalled(
        case_id=state.case_id, assignment_id="A", reason="x", recalled_at=at(1)
    )
    with pytest.raises(InvalidCommand):
        lifecycle.report(state, PID, recalled, message_id="x", now=at(2))


# --- hub-side commands --------------------------------------------------------------------


@pytest.mark.parametrize("current", list(Lifecycle))
def test_assign_only_a_case_awaiting_placement(current: Lifecycle) -> None:
    """Exclusivity: a case with a partner (or closed) is never placed again."""
    state = reach(current).state
    if current not in AWAITING_PLACEMENT:
        with pytest.raises(IllegalTransition):
            lifecycle.assign(state, OTHER, sla_hours=12, now=at(40))
        return
    after = fold(lifecycle.assign(state, OTHER, sla_hours=12, now=at(40)), state)
    assert after is not None
    assert after.lifecycle is L.ASSIGNED
    assert after.partner_id == OTHER
    assert after.assignments == state.assignments + 1
    assert after.assignment_id == f"{state.case_id}-A{after.assignments}"
    assert after.accept_by == at(52)
    assert after.accepted_at is None


def test_assigning_an_assigned_case_raises() -> None:
    story = reach(L.ASSIGNED)
    with pytest.raises(IllegalTransition):
        lifecycle.assign(story.state, OTHER, sla_hours=24, now=at(5))
    with pytest.raises(IllegalTransition):
        lifecycle.assign(story.state, PID, sla_hours=24, now=at(5))


@pytest.mark.parametrize("current", list(Lifecycle))
def test_leave_unassigned(current: Lifecycle) -> None:
    state = reach(current).state
    if current is L.UNASSIGNED:
        assert lifecycle.leave_unassigned(state, reason="still nobody", now=at(40)) == []
    elif current in AWAITING_PLACEMENT:
        after = fold(lifecycle.leave_unassigned(state, reason="nobody", now=at(40)), state)
        assert after is not None
        assert after.lifecycle is L.UNASSIGNED
    else:
        with pytest.raises(IllegalTransition):
            lifecycle.leave_unassigned(state, reason="nobody", now=at(40))


@pytest.mark.parametrize("current", list(Lifecycle))
def test_recall_only_a_case_with_a_partner(current: Lifecycle) -> None:
    state = reach(current).state
    if current not in WITH_PARTNER:
        with pytest.raises(IllegalTransition):
            lifecycle.recall(state, reason="creditor", now=at(40), actor="flexspace")
        return
    events = lifecycle.recall(state, reason="creditor", now=at(40), actor="flexspace")
    assert events[0].data["partner_id"] == PID
    assert events[0].data["assignment_id"] == state.assignment_id
    after = fold(events, state)
    assert after is not None
    assert after.lifecycle is L.RECALLED
    assert after.partner_id is None
    assert after.accept_by is None
    # recalled: waiting for placement again, with any partner (it did not decline)
    placed = place(after, [PartnerProfile(PID, frozenset({"DE"}))], {}, at(41))
    assert placed.state.partner_id == PID


def test_decline_then_reroute_excludes_the_decliner() -> None:
    profiles = [PartnerProfile(PID, frozenset({"DE"})), PartnerProfile(OTHER, frozenset({"DE"}))]
    story = new_case()
    first = place(story.state, profiles, {}, at(1))
    story.do(first.events)
    declined_by = story.state.partner_id
    assert declined_by in (PID, OTHER)
    story.report(REPORTS["case.declined"](story.state, story.now()), sender=declined_by)
    declined = story.state
    assert declined.lifecycle is L.DECLINED
    assert declined.declined_by == (declined_by,)
    assert declined.partner_id is None

    second = place(story.state, profiles, {}, at(10))
    story.do(second.events)
    other = OTHER if declined_by == PID else PID
    assert story.state.lifecycle is L.ASSIGNED
    assert story.state.partner_id == other
    assert story.state.assignment_id == f"{story.state.case_id}-A2"
    assert [o.routing_key for o in second.outbox] == [f"{other}.case.assigned"]

    # the second partner declines too: nobody is left, the case waits for the coordinator
    story.report(REPORTS["case.declined"](story.state, story.now()), sender=other)
    third = place(story.state, profiles, {}, at(20))
    story.do(third.events)
    assert third.state == story.state
    assert third.state.lifecycle is L.UNASSIGNED
    assert third.outbox == []
    assert third.decision is not None
    assert third.decision.partner_id is None
    assert "DE" in third.decision.reason


# --- claims -------------------------------------------------------------------------------


def test_claims_of_one_debtor_form_one_case() -> None:
    story = new_case(claim(1), claim(2))
    assert story.state.version == 2
    assert sorted(story.state.claims) == ["INV-000001", "INV-000002"]
    assert story.state.total == Decimal("2105.00")
    assert [e.kind for e in story.events] == [EventKind.CLAIM_ADDED, EventKind.CLAIM_ADDED]


def test_a_claim_in_another_currency_cannot_join_the_case() -> None:
    story = new_case()
    with pytest.raises(InvalidCommand):
        lifecycle.add_claim(
            story.state, story.state.case_id, claim(2, currency="GBP"), message_id="x", now=T0
        )


def test_an_amended_claim_replaces_the_old_one() -> None:
    story = new_case()
    story.do(
        lifecycle.add_claim(
            story.state,
            story.state.case_id,
            claim(1, principal="500.00"),
            message_id="amend",
            now=at(1),
            amended=True,
        )
    )
    assert story.events[-1].kind is EventKind.CLAIM_AMENDED
    assert story.state.claims["INV-000001"]["principal"] == "500.00"
    assert story.state.total == Decimal("552.50")


def test_withdraw_the_last_claim_of_an_assigned_case_recalls_and_closes_it() -> None:
    story = reach(L.ASSIGNED)
    number = next(iter(story.state.claims))
    assignment = story.state.assignment_id
    events = lifecycle.withdraw_claim(
        story.state, number, reason="paid directly", message_id="w1", now=at(5)
    )
    assert [e.kind for e in events] == [
        EventKind.CLAIM_WITHDRAWN,
        EventKind.RECALLED,
        EventKind.CLOSED,
    ]
    assert [e.seq for e in events] == [story.state.version + i for i in (1, 2, 3)]
    assert events[1].data["partner_id"] == PID
    assert events[1].data["assignment_id"] == assignment
    story.do(events)
    assert story.state.lifecycle is L.CLOSED
    assert story.state.close_code == "withdrawn"
    assert story.state.partner_id is None
    assert story.state.open_claims == {}
    assert story.state.total == Decimal(0)
    with pytest.raises(InvalidCommand):
        lifecycle.withdraw_claim(story.state, number, reason="", message_id="w2", now=at(6))


@pytest.mark.parametrize("current", [L.NEW, L.UNASSIGNED, L.DECLINED])
def test_withdraw_the_last_claim_of_a_waiting_case_closes_it(current: Lifecycle) -> None:
    story = reach(current)
    number = next(iter(story.state.claims))
    events = lifecycle.withdraw_claim(story.state, number, reason="x", message_id="w", now=at(5))
    assert [e.kind for e in events] == [EventKind.CLAIM_WITHDRAWN, EventKind.CLOSED]
    story.do(events)
    assert story.state.lifecycle is L.CLOSED
    assert story.state.close_code == "withdrawn"


def test_withdraw_one_of_two_claims_keeps_the_case_with_its_partner() -> None:
    story = new_case(claim(1), claim(2))
    story.do(lifecycle.assign(story.state, PID, sla_hours=24, now=at(1)))
    events = lifecycle.withdraw_claim(
        story.state, "INV-000001", reason="x", message_id="w", now=at(2)
    )
    assert [e.kind for e in events] == [EventKind.CLAIM_WITHDRAWN]
    story.do(events)
    assert story.state.lifecycle is L.ASSIGNED
    assert story.state.partner_id == PID
    assert list(story.state.open_claims) == ["INV-000002"]
    assert story.state.total == Decimal("1052.50")


def test_withdrawing_an_unknown_claim_is_an_invalid_command() -> None:
    with pytest.raises(InvalidCommand):
        lifecycle.withdraw_claim(new_case().state, "INV-999", reason="x", message_id="w", now=at(1))


def test_a_new_claim_reopens_a_closed_case() -> None:
    story = reach(L.CLOSED)
    story.do(
        lifecycle.add_claim(story.state, story.state.case_id, claim(2), message_id="c2", now=at(50))
    )
    assert story.state.lifecycle is L.NEW
    assert story.state.close_code is None
    assert story.state.partner_id is None


# --- phase ----------------------------------------------------------------------------------


def _step(state: CaseState, step: str, phase: Phase, country: str = "DE") -> m.CaseLegalStep:
    return m.CaseLegalStep(
        case_id=state.case_id, occurred_at=at(30), country=country, step=step, phase=phase
    )


def test_phase_changes_by_legal_step_and_back() -> None:
    story = reach(L.ACCEPTED)
    phases = [story.state.phase]
    for step, phase in (
        ("mahnbescheid", Phase.LEGAL),
        ("vollstreckungsbescheid", Phase.ENFORCEMENT),
        ("ratenzahlung", Phase.AMICABLE),
        ("klage", Phase.LEGAL),
    ):
        story.report(_step(story.state, step, phase))
        phases.append(story.state.phase)
    assert phases == [Phase.AMICABLE, Phase.LEGAL, Phase.ENFORCEMENT, Phase.AMICABLE, Phase.LEGAL]
    assert story.state.lifecycle is L.IN_PROGRESS


def test_legal_steps_are_checked_against_the_country_catalog() -> None:
    state = reach(L.IN_PROGRESS).state
    catalog = {"mahnbescheid": {"phase": "legal"}, "gerichtsvollzieher": {"phase": "enforcement"}}

    def decide(msg: m.CaseLegalStep) -> list[Event]:
        return lifecycle.report(state, PID, msg, message_id="x", now=at(31), legal_steps=catalog)

    assert decide(_step(state, "mahnbescheid", Phase.LEGAL))[0].data["step"] == "mahnbescheid"
    with pytest.raises(UnknownLegalStep) as unknown:
        decide(_step(state, "writ_of_fifa", Phase.LEGAL))
    assert unknown.value.code == "unknown_legal_step"
    assert "mahnbescheid" in unknown.value.message
    with pytest.raises(InvalidCommand):
        decide(_step(state, "gerichtsvollzieher", Phase.LEGAL))
    with pytest.raises(InvalidCommand):
        decide(_step(state, "mahnbescheid", Phase.LEGAL, country="FR"))


# --- money ----------------------------------------------------------------------------------


def test_payments_and_promises_sum_as_decimal_strings() -> None:
    story = reach(L.ACCEPTED)
    cid = story.state.case_id
    for amount in ("100.10", "0.90", "0.1", "0.2"):
        story.report(m.CasePayment(case_id=cid, occurred_at=at(30), amount=amount, currency="EUR"))
    assert story.state.collected == "101.30"
    assert isinstance(story.state.collected, str)
    assert lifecycle.outstanding(story.state) == Decimal("1052.50") - Decimal("101.30")
    story.report(
        m.CasePromise(
            case_id=cid, occurred_at=at(31), amount="450.25", currency="EUR", due_date=T0.date()
        )
    )
    assert story.state.promised == "450.25"
    big = "999999999999999.9999"
    story.report(m.CasePayment(case_id=cid, occurred_at=at(32), amount=big, currency="EUR"))
    assert Decimal(story.state.collected) == Decimal(big) + Decimal("101.30")


def test_a_payment_in_another_currency_is_refused() -> None:
    state = reach(L.IN_PROGRESS).state
    usd = m.CasePayment(case_id=state.case_id, occurred_at=at(30), amount="1", currency="USD")
    with pytest.raises(InvalidCommand):
        lifecycle.report(state, PID, usd, message_id="x", now=at(31))


def test_settlement_proposed_then_decided() -> None:
    story = reach(L.IN_PROGRESS)
    story.report(REPORTS["settlement.proposed"](story.state, at(30)))
    assert set(story.state.pending_settlements) == {"S1"}
    with pytest.raises(InvalidCommand):
        lifecycle.report(
            story.state,
            PID,
            REPORTS["settlement.proposed"](story.state, at(31)),
            message_id="again",
            now=at(31),
        )
    with pytest.raises(InvalidCommand):
        lifecycle.decide_settlement(
            story.state, "S9", approved=True, decided_by="kam", note=None, now=at(32)
        )
    events = lifecycle.decide_settlement(
        story.state, "S1", approved=False, decided_by="kam", note="too low", now=at(32)
    )
    assert events[0].data["decision"] == "rejected"
    assert events[0].data["partner_id"] == PID
    story.do(events)
    assert story.state.pending_settlements == {}


# --- history ---------------------------------------------------------------------------------


def full_story() -> Story:
    story = new_case(claim(1), claim(2))
    story.do(lifecycle.leave_unassigned(story.state, reason="nobody yet", now=story.now()))
    story.do(lifecycle.assign(story.state, OTHER, sla_hours=24, now=story.now()))
    story.report(REPORTS["case.declined"](story.state, story.now()), sender=OTHER)
    story.do(lifecycle.assign(story.state, PID, sla_hours=24, now=story.now()))
    for name in (
        "case.accepted",
        "case.activity",
        "case.promise",
        "case.payment",
        "case.dispute/opened",
        "document.added",
        "case.dispute/resolved",
        "settlement.proposed",
        "case.legal_step",
        "case.payment",
    ):
        story.report(REPORTS[name](story.state, story.now()))
    story.do(
        lifecycle.decide_settlement(
            story.state, "S1", approved=True, decided_by="kam", note=None, now=story.now()
        )
    )
    story.do(
        lifecycle.withdraw_claim(
            story.state, "INV-000002", reason="credit note", message_id="w", now=story.now()
        )
    )
    story.report(REPORTS["case.closed"](story.state, story.now()))
    return story


def test_fold_of_the_events_equals_the_state_built_step_by_step() -> None:
    story = full_story()
    assert [e.seq for e in story.events] == list(range(1, len(story.events) + 1))
    assert len({e.event_id for e in story.events}) == len(story.events)
    assert fold(story.events) == story.state
    for n in range(1, len(story.events) + 1):
        assert fold(story.events[:n]) == story.states[n - 1]
    # folding from any intermediate state gives the same end
    assert fold(story.events[5:], story.states[4]) == story.state
    final = story.state
    assert final.lifecycle is L.CLOSED
    assert final.close_code == "paid"
    assert final.version == len(story.events)
    assert final.collected == "200.00"
    assert final.declined_by == (OTHER,)
    assert final.phase is Phase.LEGAL
    assert final.first_action_at is not None


def test_as_of_on_the_recorded_axis() -> None:
    story = full_story()
    assert as_of(story.events, T0 - dt.timedelta(seconds=1)) is None
    for event, state in zip(story.events, story.states, strict=True):
        # the last event recorded at a moment decides the state known then
        later = [e for e in story.events if e.recorded_at == event.recorded_at]
        if later[-1] is event:
            assert as_of(story.events, event.recorded_at) == state
    assert as_of(reversed(story.events), at(10_000)) == story.state


def test_as_of_on_the_occurred_axis() -> None:
    """A call made yesterday and reported today: known today, happened yesterday."""
    story = reach(L.ACCEPTED)
    assert story.state.accepted_at is not None
    call = m.CaseActivity(
        case_id=story.state.case_id,
        occurred_at=at(20),
        kind=m.ActivityKind.CALL,
        outcome=m.ActivityOutcome.NO_CONTACT,
    )
    story.do(lifecycle.report(story.state, PID, call, message_id="late", now=at(44)))
    before = as_of(story.events, at(30), axis="recorded")
    by_then = as_of(story.events, at(30), axis="occurred")
    assert before is not None and by_then is not None
    assert before.lifecycle is L.ACCEPTED
    assert by_then.lifecycle is L.IN_PROGRESS
    assert by_then.first_action_at == at(20)
    assert as_of(story.events, at(44)) == story.state
    with pytest.raises(ValueError):
        as_of(story.events, at(44), axis="valid")


def test_as_of_occurred_before_a_backdated_report() -> None:
    story = reach(L.ACCEPTED)
    backdated = m.CaseActivity(
        case_id=story.state.case_id,
        occurred_at=T0 - dt.timedelta(days=3),
        kind=m.ActivityKind.LETTER,
        outcome=m.ActivityOutcome.SENT,
    )
    story.do(lifecycle.report(story.state, PID, backdated, message_id="b", now=at(44)))
    # the case did not exist three days before T0 minus a day
    assert as_of(story.events, T0 - dt.timedelta(days=1), axis="occurred") is None


def test_domain_errors_carry_the_case_id() -> None:
    state = reach(L.NEW).state
    with pytest.raises(DomainError) as refused:
        lifecycle.recall(state, reason="x", now=at(1), actor="cr")
    assert refused.value.case_id == state.case_id
    assert state.case_id in refused.value.message


def test_a_decided_settlement_cannot_be_proposed_again() -> None:
    story = reach(L.IN_PROGRESS)
    story.report(REPORTS["settlement.proposed"](story.state, at(30)))
    story.do(
        lifecycle.decide_settlement(
            story.state, "S1", approved=False, decided_by="kam", note=None, now=at(31)
        )
    )
    with pytest.raises(InvalidCommand):
        lifecycle.report(
            story.state,
            PID,
            REPORTS["settlement.proposed"](story.state, at(32)),
            message_id="again",
            now=at(32),
        )
