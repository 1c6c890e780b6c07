"""The case state machine: ``decide`` functions turn a command into events or refuse it,
``apply`` folds one event into the state. Both are pure.

Lifecycle ``new -> assigned -> accepted -> in_progress -> closed``, with ``unassigned``,
``declined``, ``recalled`` and ``on_hold`` (dispute) on the side. Phase (amicable, legal,
enforcement) is a separate axis set by legal steps; it may go back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hub.domain.errors import (
    IllegalTransition,
    InvalidCommand,
    NotAssignee,
    UnknownDocument,
    UnknownLegalStep,
)
from hub.domain.model import (
    AWAITING_PLACEMENT,
    WITH_PARTNER,
    CaseState,
    Event,
    EventKind,
    Lifecycle,
    add_money,
)
from partner_sdk import messages as m
from partner_sdk.messages import Phase

L = Lifecycle

#: Which lifecycles each partner report is allowed in, and where it leads (None: stays).
_REPORTS: dict[type[m.Message], tuple[frozenset[Lifecycle], Lifecycle | None]] = {
    m.CaseAccepted: (frozenset({L.ASSIGNED}), L.ACCEPTED),
    m.CaseDeclined: (frozenset({L.ASSIGNED}), L.DECLINED),
    m.CaseActivity: (frozenset({L.ACCEPTED, L.IN_PROGRESS, L.ON_HOLD}), None),
    m.CasePromise: (frozenset({L.ACCEPTED, L.IN_PROGRESS}), L.IN_PROGRESS),
    m.CasePayment: (frozenset({L.ACCEPTED, L.IN_PROGRESS, L.ON_HOLD}), None),
    m.SettlementProposed: (frozenset({L.ACCEPTED, L.IN_PROGRESS, L.ON_HOLD}), None),
    m.CaseLegalStep: (frozenset({L.ACCEPTED, L.IN_PROGRESS}), L.IN_PROGRESS),
    m.DocumentAdded: (frozenset({L.ACCEPTED, L.IN_PROGRESS, L.ON_HOLD, L.CLOSED}), None),
    m.CaseClosed: (frozenset({L.ACCEPTED, L.IN_PROGRESS, L.ON_HOLD}), L.CLOSED),
}

_KIND_OF: dict[type[m.Message], EventKind] = {
    m.CaseAccepted: EventKind.ACCEPTED,
    m.CaseDeclined: EventKind.DECLINED,
    m.CaseActivity: EventKind.ACTIVITY,
    m.CasePromise: EventKind.PROMISE,
    m.CasePayment: EventKind.PAYMENT,
    m.SettlementProposed: EventKind.SETTLEMENT_PROPOSED,
    m.CaseLegalStep: EventKind.LEGAL_STEP,
    m.DocumentAdded: EventKind.DOCUMENT_ADDED,
    m.CaseClosed: EventKind.CLOSED,
}


def _event(
    state: CaseState | None,
    case_id: str,
    kind: EventKind,
    *,
    occurred_at: dt.datetime,
    now: dt.datetime,
    actor: str,
    data: Mapping[str, Any],
    message_id: str | None,
    offset: int = 0,
) -> Event:
    seq = (state.version if state else 0) + 1 + offset
    return Event(case_id, seq, kind, occurred_at, now, actor, dict(data), message_id)


def claim_fields(claim: m.ClaimPlaced) -> dict[str, Any]:
    return {
        "invoice_number": claim.invoice_number,
        "invoice_date": claim.invoice_date.isoformat(),
        "due_date": claim.due_date.isoformat(),
        "principal": claim.principal,
        "interest": claim.interest,
        "fees": claim.fees,
        "contract_ref": claim.contract_ref,
        "phase": claim.phase.value,
        "withdrawn": False,
    }


# --- claims -----------------------------------------------------------------------------


def add_claim(
    state: CaseState | None,
    case_id: str,
    claim: m.ClaimPlaced,
    *,
    message_id: str,
    now: dt.datetime,
    amended: bool = False,
) -> list[Event]:
    """A new or amended claim of this case's debtor."""
    if state is not None and state.currency != claim.currency:
        raise InvalidCommand(
            f"case {case_id} is kept in {state.currency}; a claim in {claim.currency} "
            "for the same debtor cannot join it",
            case_id=case_id,
        )
    data: dict[str, Any] = {"claim": claim_fields(claim)}
    if state is None:
        data["case"] = {
            "creditor_id": claim.creditor_id,
            "creditor_entity": claim.creditor_entity,
            "debtor": claim.debtor.model_dump(mode="json", exclude_none=True),
            "country": claim.debtor.country,
            "currency": claim.currency,
            "phase": claim.phase.value,
        }
    kind = EventKind.CLAIM_AMENDED if amended else EventKind.CLAIM_ADDED
    return [
        _event(
            state,
            case_id,
            kind,
            occurred_at=now,
            now=now,
            actor=claim.creditor_id,
            data=data,
            message_id=message_id,
        )
    ]


def withdraw_claim(
    state: CaseState, invoice_number: str, *, reason: str, message_id: str, now: dt.datetime
) -> list[Event]:
    """Withdraw one claim; when none is left the case is recalled and closed ``withdrawn``."""
    claim = state.claims.get(invoice_number)
    if claim is None or claim.get("withdrawn"):
        raise InvalidCommand(
            f"claim {invoice_number} is not open on case {state.case_id}", case_id=state.case_id
        )
    events = [
        _event(
            state,
            state.case_id,
            EventKind.CLAIM_WITHDRAWN,
            occurred_at=now,
            now=now,
            actor=state.creditor_id,
            data={"invoice_number": invoice_number, "reason": reason},
            message_id=message_id,
        )
    ]
    if len(state.open_claims) > 1 or state.lifecycle is L.CLOSED:
        return events
    if state.lifecycle in WITH_PARTNER:
        events.append(
            _event(
                state,
                state.case_id,
                EventKind.RECALLED,
                occurred_at=now,
                now=now,
                actor=state.creditor_id,
                data={
                    "partner_id": state.partner_id,
                    "assignment_id": state.assignment_id,
                    "reason": "all claims withdrawn by the creditor",
                },
                message_id=message_id,
                offset=len(events),
            )
        )
    events.append(
        _event(
            state,
            state.case_id,
            EventKind.CLOSED,
            occurred_at=now,
            now=now,
            actor=state.creditor_id,
            data={"close_code": m.CloseCode.WITHDRAWN.value, "note": reason},
            message_id=message_id,
            offset=len(events),
        )
    )
    return events


# --- placement ----------------------------------------------------------------------------


def assign(
    state: CaseState, partner_id: str, *, sla_hours: float, now: dt.datetime, actor: str = "hub"
) -> list[Event]:
    """Place the case with a partner. Exclusive: a case with a partner is never re-placed."""
    if state.lifecycle not in AWAITING_PLACEMENT:
        raise IllegalTransition(
            f"case {state.case_id} is {state.lifecycle.value}; only a case awaiting placement "
            "can be assigned",
            case_id=state.case_id,
        )
    number = state.assignments + 1
    return [
        _event(
            state,
            state.case_id,
            EventKind.ASSIGNED,
            occurred_at=now,
            now=now,
            actor=actor,
            data={
                "partner_id": partner_id,
                "assignment_id": f"{state.case_id}-A{number}",
                "accept_by": now + dt.timedelta(hours=sla_hours),
            },
            message_id=None,
        )
    ]


def leave_unassigned(state: CaseState, *, reason: str, now: dt.datetime) -> list[Event]:
    """No partner can take the case: it waits in the coordinator's inbox."""
    if state.lifecycle is L.UNASSIGNED:
        return []
    if state.lifecycle not in AWAITING_PLACEMENT:
        raise IllegalTransition(
            f"case {state.case_id} is {state.lifecycle.value}", case_id=state.case_id
        )
    return [
        _event(
            state,
            state.case_id,
            EventKind.UNASSIGNED,
            occurred_at=now,
            now=now,
            actor="hub",
            data={"reason": reason},
            message_id=None,
        )
    ]


def recall(state: CaseState, *, reason: str, now: dt.datetime, actor: str) -> list[Event]:
    """Take the case back from its partner (creditor recall or coordinator reassignment)."""
    if state.lifecycle not in WITH_PARTNER:
        raise IllegalTransition(
            f"case {state.case_id} is {state.lifecycle.value}; it is with no partner",
            case_id=state.case_id,
        )
    return [
        _event(
            state,
            state.case_id,
            EventKind.RECALLED,
            occurred_at=now,
            now=now,
            actor=actor,
            data={
                "partner_id": state.partner_id,
                "assignment_id": state.assignment_id,
                "reason": reason,
            },
            message_id=None,
        )
    ]


def decide_settlement(
    state: CaseState,
    settlement_id: str,
    *,
    approved: bool,
    decided_by: str,
    note: str | None,
    now: dt.datetime,
) -> list[Event]:
    if settlement_id not in state.pending_settlements:
        raise InvalidCommand(
            f"settlement {settlement_id} is not waiting for a decision on case {state.case_id}",
            case_id=state.case_id,
        )
    return [
        _event(
            state,
            state.case_id,
            EventKind.SETTLEMENT_DECIDED,
            occurred_at=now,
            now=now,
            actor=decided_by,
            data={
                "settlement_id": settlement_id,
                "decision": "approved" if approved else "rejected",
                "note": note,
                "partner_id": state.partner_id,
            },
            message_id=None,
        )
    ]


# --- partner reports -------------------------------------------------------------------------


def report(
    state: CaseState,
    sender: str,
    msg: m.Message,
    *,
    message_id: str,
    now: dt.datetime,
    legal_steps: Mapping[str, Any] | None = None,
) -> list[Event]:
    """A partner's report on a case it holds. Refusals raise a ``DomainError``."""
    case_id = state.case_id
    if state.partner_id != sender:
        raise NotAssignee(f"partner {sender} is not assigned case {case_id}", case_id=case_id)
    if isinstance(msg, m.CaseDispute):
        allowed = (
            frozenset({L.ACCEPTED, L.IN_PROGRESS})
            if msg.status == "opened"
            else frozenset({L.ON_HOLD})
        )
        kind = EventKind.DISPUTE_OPENED if msg.status == "opened" else EventKind.DISPUTE_RESOLVED
    else:
        try:
            allowed, _ = _REPORTS[type(msg)]
        except KeyError:
            raise InvalidCommand(f"{msg.TYPE} is not a partner report", case_id=case_id) from None
        kind = _KIND_OF[type(msg)]
    if state.lifecycle not in allowed:
        raise IllegalTransition(
            f"{msg.TYPE} is not allowed while case {case_id} is {state.lifecycle.value}",
            case_id=case_id,
        )
    assignment_id = getattr(msg, "assignment_id", None)
    if assignment_id is not None and assignment_id != state.assignment_id:
        raise IllegalTransition(
            f"assignment {assignment_id} is not the current assignment of case {case_id}",
            case_id=case_id,
        )
    currency = getattr(msg, "currency", None)
    if currency is not None and currency != state.currency:
        raise InvalidCommand(
            f"case {case_id} is kept in {state.currency}, not {currency}", case_id=case_id
        )
    if isinstance(msg, m.CaseLegalStep):
        _check_legal_step(state, msg, legal_steps)
    if isinstance(msg, m.SettlementProposed) and (
        msg.settlement_id in state.pending_settlements or msg.settlement_id in state.settlement_ids
    ):
        raise InvalidCommand(
            f"settlement {msg.settlement_id} is already proposed on case {case_id}",
            case_id=case_id,
        )
    data = msg.model_dump(
        mode="json", exclude_none=True, exclude={"case_id", "occurred_at", "content_base64"}
    )
    return [
        _event(
            state,
            case_id,
            kind,
            occurred_at=msg.occurred_at,  # type: ignore[attr-defined]
            now=now,
            actor=sender,
            data=data,
            message_id=message_id,
        )
    ]


def check_download(
    state: CaseState, sender: str, document_id: str, document: Mapping[str, Any] | None
) -> None:
    """A partner reads a case's documents only while the case is assigned to it (also once
    it has closed it). Whose case it is comes first, so that another partner learns
    nothing of which documents exist. ``document`` is the stored one, or None."""
    if state.partner_id != sender:
        raise NotAssignee(
            f"partner {sender} is not assigned case {state.case_id}", case_id=state.case_id
        )
    if document is None:
        raise UnknownDocument(
            f"case {state.case_id} has no document {document_id}", case_id=state.case_id
        )


def _check_legal_step(
    state: CaseState, msg: m.CaseLegalStep, legal_steps: Mapping[str, Any] | None
) -> None:
    if msg.country != state.country:
        raise InvalidCommand(
            f"case {state.case_id} is in {state.country}, not {msg.country}",
            case_id=state.case_id,
        )
    if legal_steps is None:
        return
    step = legal_steps.get(msg.step)
    if step is None:
        raise UnknownLegalStep(
            f"{msg.step!r} is not a legal step of {msg.country}; known: "
            + ", ".join(sorted(legal_steps)),
            case_id=state.case_id,
        )
    phase = step.get("phase") if isinstance(step, Mapping) else None
    if phase is not None and phase != msg.phase.value:
        raise InvalidCommand(
            f"legal step {msg.step} belongs to phase {phase}, not {msg.phase.value}",
            case_id=state.case_id,
        )


# --- folding -------------------------------------------------------------------------------


def apply(state: CaseState | None, event: Event) -> CaseState:
    """The state after one event. Events are trusted: they were decided above."""
    d = event.data
    if state is None:
        head = d["case"]
        state = CaseState(
            case_id=event.case_id,
            creditor_id=head["creditor_id"],
            creditor_entity=head["creditor_entity"],
            debtor=head["debtor"],
            country=head["country"],
            currency=head["currency"],
            phase=Phase(head.get("phase", "amicable")),
            placed_at=event.occurred_at,
        )
    s = state.replace(version=event.seq)
    k = event.kind
    if k in (EventKind.CLAIM_ADDED, EventKind.CLAIM_AMENDED):
        claim = d["claim"]
        claims = {**s.claims, claim["invoice_number"]: claim}
        s = s.replace(claims=claims)
        if k is EventKind.CLAIM_ADDED and s.lifecycle is L.CLOSED:
            s = s.replace(lifecycle=L.NEW, close_code=None, closed_at=None, partner_id=None)
    elif k is EventKind.CLAIM_WITHDRAWN:
        number = d["invoice_number"]
        s = s.replace(claims={**s.claims, number: {**s.claims[number], "withdrawn": True}})
    elif k is EventKind.UNASSIGNED:
        s = s.replace(lifecycle=L.UNASSIGNED)
    elif k is EventKind.ASSIGNED:
        s = s.replace(
            lifecycle=L.ASSIGNED,
            partner_id=d["partner_id"],
            assignment_id=d["assignment_id"],
            assignments=s.assignments + 1,
            assigned_at=event.occurred_at,
            accept_by=d["accept_by"],
            accepted_at=None,
        )
    elif k is EventKind.ACCEPTED:
        s = s.replace(lifecycle=L.ACCEPTED, accepted_at=event.occurred_at)
    elif k in (EventKind.DECLINED, EventKind.RECALLED):
        if k is EventKind.DECLINED:
            s = s.replace(lifecycle=L.DECLINED, declined_by=(*s.declined_by, str(s.partner_id)))
        else:
            s = s.replace(lifecycle=L.RECALLED)
        s = s.replace(partner_id=None, accept_by=None)
    elif k is EventKind.DISPUTE_OPENED:
        s = s.replace(lifecycle=L.ON_HOLD)
    elif k is EventKind.DISPUTE_RESOLVED:
        s = s.replace(lifecycle=L.IN_PROGRESS)
    elif k is EventKind.CLOSED:
        s = s.replace(lifecycle=L.CLOSED, close_code=d["close_code"], closed_at=event.occurred_at)
    elif k is EventKind.SETTLEMENT_DECIDED:
        pending = dict(s.pending_settlements)
        pending.pop(d["settlement_id"], None)
        s = s.replace(pending_settlements=pending)
    else:
        s = _apply_work(s, event)
    return s


def _apply_work(s: CaseState, event: Event) -> CaseState:
    """Reports of work on the case: activity, promise, payment, settlement, legal step."""
    d = event.data
    k = event.kind
    if k is EventKind.DOCUMENT_ADDED:
        return s
    if s.first_action_at is None:
        s = s.replace(first_action_at=event.occurred_at)
    if s.lifecycle is L.ACCEPTED:
        s = s.replace(lifecycle=L.IN_PROGRESS)
    if k is EventKind.PROMISE:
        s = s.replace(promised=add_money(s.promised, d["amount"]))
    elif k is EventKind.PAYMENT:
        s = s.replace(collected=add_money(s.collected, d["amount"]))
    elif k is EventKind.SETTLEMENT_PROPOSED:
        pending = {**s.pending_settlements, d["settlement_id"]: dict(d)}
        s = s.replace(
            pending_settlements=pending, settlement_ids=(*s.settlement_ids, d["settlement_id"])
        )
    elif k is EventKind.LEGAL_STEP:
        s = s.replace(phase=Phase(d["phase"]))
    return s


def outstanding(state: CaseState) -> Decimal:
    return state.total - Decimal(state.collected)
