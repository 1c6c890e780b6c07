"""Builders of the messages the hub sends. Message ids are derived from what caused the
message, so a replayed input produces the same outgoing id and receivers can dedupe."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

from hub.domain.model import CaseState
from partner_sdk import messages as m

from .ports import OutMessage

RECEIPTS = "claims.receipts"
PARTNERS_OUT = "partners.out"


def receipt(
    *,
    claim_message_id: str,
    creditor_id: str,
    status: m.ReceiptStatus,
    now: dt.datetime,
    creditor_entity: str | None = None,
    invoice_number: str | None = None,
    case_id: str | None = None,
    batch_id: str | None = None,
    errors: Sequence[m.ErrorDetail] = (),
) -> OutMessage:
    body = m.ClaimReceipt(
        claim_message_id=claim_message_id[:200],
        creditor_id=creditor_id[:64],
        status=status,
        creditor_entity=creditor_entity[:64] if creditor_entity else None,
        invoice_number=invoice_number[:64] if invoice_number else None,
        case_id=case_id,
        batch_id=batch_id[:64] if batch_id else None,
        errors=list(errors)[:50],
        received_at=now,
    )
    return OutMessage(
        message_id=f"rcpt:{claim_message_id}",
        exchange=RECEIPTS,
        routing_key=f"{creditor_id}.claim.receipt",
        type=m.ClaimReceipt.TYPE,
        body=body.to_json(),
        correlation_id=case_id,
        created_at=now,
    )


def batch_reconciled(body: m.BatchReconciled) -> OutMessage:
    return OutMessage(
        message_id=f"batch:{body.creditor_id}:{body.batch_id}",
        exchange=RECEIPTS,
        routing_key=f"{body.creditor_id}.batch.reconciled",
        type=m.BatchReconciled.TYPE,
        body=body.to_json(),
        created_at=body.completed_at,
    )


def _to_partner(
    partner_id: str, msg: m.Message, message_id: str, case_id: str | None, now: dt.datetime
) -> OutMessage:
    return OutMessage(
        message_id=message_id,
        exchange=PARTNERS_OUT,
        routing_key=f"{partner_id}.{msg.TYPE}",
        type=msg.TYPE,
        body=msg.to_json(),
        correlation_id=case_id,
        created_at=now,
    )


def _open_claims(state: CaseState) -> list[m.AssignedClaim]:
    """The case's open claims as a partner sees them (no debtor, no creditor notes)."""
    return [
        m.AssignedClaim(
            invoice_number=c["invoice_number"],
            invoice_date=dt.date.fromisoformat(c["invoice_date"]),
            due_date=dt.date.fromisoformat(c["due_date"]),
            principal=c["principal"],
            interest=c["interest"],
            fees=c["fees"],
            contract_ref=c.get("contract_ref"),
        )
        for c in state.open_claims.values()
    ]


def assignment(state: CaseState, now: dt.datetime) -> OutMessage:
    """``case.assigned`` for the state's current assignment: only what the partner needs."""
    assert state.partner_id and state.assignment_id and state.accept_by
    claims = _open_claims(state)
    body = m.CaseAssigned(
        case_id=state.case_id,
        assignment_id=state.assignment_id,
        partner_id=state.partner_id,
        creditor_entity=state.creditor_entity,
        debtor=m.PartnerDebtor.model_validate(dict(state.debtor), strict=False),
        claims=claims,
        currency=state.currency,
        total=str(state.total),
        phase=state.phase,
        assigned_at=state.assigned_at or now,
        accept_by=state.accept_by,
    )
    return _to_partner(state.partner_id, body, f"asg:{state.assignment_id}", state.case_id, now)


def recalled(
    partner_id: str, case_id: str, assignment_id: str, reason: str, now: dt.datetime
) -> OutMessage:
    body = m.CaseRecalled(
        case_id=case_id, assignment_id=assignment_id, reason=reason[:2000], recalled_at=now
    )
    return _to_partner(partner_id, body, f"rcl:{assignment_id}", case_id, now)


def case_updated(
    state: CaseState,
    change: m.CaseChange,
    invoice_number: str,
    *,
    cause: str,
    now: dt.datetime,
) -> OutMessage:
    """``case.updated`` to the partner holding ``state`` after the creditor's claim message
    ``cause`` changed its claims; the id is derived from ``cause`` (one per claim message)."""
    assert state.partner_id and state.assignment_id
    body = m.CaseUpdated(
        case_id=state.case_id,
        assignment_id=state.assignment_id,
        partner_id=state.partner_id,
        change=change,
        invoice_number=invoice_number,
        claims=_open_claims(state),
        currency=state.currency,
        total=str(state.total),
        updated_at=now,
    )
    return _to_partner(state.partner_id, body, f"upd:{cause}", state.case_id, now)


def settlement_decided(partner_id: str, body: m.SettlementDecided, now: dt.datetime) -> OutMessage:
    return _to_partner(
        partner_id, body, f"std:{body.case_id}:{body.settlement_id}", body.case_id, now
    )


def document_content(
    partner_id: str,
    *,
    in_reply_to: str,
    case_id: str,
    load: Callable[[], Awaitable[bytes]],
    now: dt.datetime,
) -> OutMessage:
    """``document.content`` answering the ``document.requested`` ``in_reply_to``: a
    transient reply (never in the outbox) whose body ``load`` builds when it is sent."""
    return OutMessage(
        message_id=f"doc:{partner_id}:{in_reply_to}",
        exchange=PARTNERS_OUT,
        routing_key=f"{partner_id}.{m.DocumentContent.TYPE}",
        type=m.DocumentContent.TYPE,
        body=b"",
        correlation_id=case_id,
        created_at=now,
        transient=True,
        load=load,
    )


def error_reply(
    partner_id: str,
    *,
    in_reply_to: str,
    in_reply_to_type: str | None,
    case_id: str | None,
    code: str,
    message: str,
    errors: Sequence[m.ErrorDetail] = (),
    now: dt.datetime,
) -> OutMessage:
    body = m.ErrorReply(
        in_reply_to=in_reply_to[:200],
        in_reply_to_type=(in_reply_to_type or "")[:64] or None,
        case_id=case_id[:64] if case_id else None,
        code=code,  # type: ignore[arg-type]
        message=message[:1000],
        errors=list(errors)[:50],
        occurred_at=now,
    )
    return _to_partner(partner_id, body, f"err:{partner_id}:{in_reply_to}", case_id, now)
