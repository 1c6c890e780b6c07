"""Intake: claims from the creditor become cases, each claim gets exactly one receipt.

Consumer of ``hub.claims``. A batch of deliveries is handled in one transaction:
inbox (message ids seen), claims, cases, events, outbox and batch counts are written
together, so a crash at any point either loses the whole batch (it is redelivered) or
none of it. Receipts and assignments leave through the outbox after the commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hub import contract
from hub.domain import lifecycle
from hub.domain.errors import DomainError
from hub.domain.model import (
    WITH_PARTNER,
    CaseState,
    Event,
    Lifecycle,
    case_id_for,
    debtor_key,
    fold,
)
from partner_sdk import messages as m
from partner_sdk.messages import ErrorDetail, ReceiptStatus

from . import outgoing
from .placement import place
from .ports import Changeset, Clock, Incoming, OutMessage, PartnerDirectory, Store, Tx, utcnow

log = logging.getLogger(__name__)

CLAIM_TYPES = (m.ClaimPlaced.TYPE, m.ClaimAmended.TYPE, m.ClaimWithdrawn.TYPE)
_BATCH_FIELDS = frozenset({"batch_id", "batch_size"})
_HEADER_FIELDS = frozenset({"creditor_id", "batch_id", "batch_size"})


def message_id_of(msg: Incoming) -> str:
    """The delivery's ``message_id``; without one, a digest of the body stands in, so the
    same body sent twice is still recognised."""
    if msg.message_id:
        return msg.message_id[:200]
    return "sha256:" + hashlib.sha256(msg.body).hexdigest()


def content_hash(claim: m.ClaimPlaced) -> str:
    """What makes two versions of a claim the same: every field but the batch it came in."""
    doc = claim.model_dump(mode="json", exclude=set(_BATCH_FIELDS), exclude_none=True)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _raw_fields(body: bytes) -> dict[str, Any]:
    """Best-effort fields of a rejected body, to address its receipt and count its batch."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("creditor_id", "creditor_entity", "invoice_number", "batch_id"):
        value = doc.get(key)
        if isinstance(value, str) and 0 < len(value) <= 64:
            out[key] = value
    size = doc.get("batch_size")
    if isinstance(size, int) and not isinstance(size, bool) and 0 < size <= 10_000_000:
        out["batch_size"] = size
    return out


@dataclass
class _Parsed:
    incoming: Incoming
    message_id: str
    model: m.ClaimPlaced | m.ClaimWithdrawn | None
    errors: list[ErrorDetail]
    raw: dict[str, Any]


class IntakeService:
    def __init__(
        self,
        store: Store,
        partners: PartnerDirectory,
        *,
        clock: Clock = utcnow,
        default_creditor: str = "unknown",
        max_body_bytes: int = 64 * 1024,
    ) -> None:
        self.store = store
        self.partners = partners
        self.clock = clock
        self.default_creditor = default_creditor
        self.max_body_bytes = max_body_bytes

    # -- parsing (outside the transaction: pure CPU) --------------------------------

    def parse(self, msg: Incoming) -> _Parsed:
        mid = message_id_of(msg)
        mtype = msg.type or msg.routing_key
        errors: list[ErrorDetail] = []
        model: m.ClaimPlaced | m.ClaimWithdrawn | None = None
        if len(msg.body) > self.max_body_bytes:
            errors = [
                ErrorDetail(
                    path="$",
                    rule="maxBodyBytes",
                    message=f"body of {len(msg.body)} bytes exceeds {self.max_body_bytes}",
                )
            ]
        elif msg.content_type not in (None, "", "application/json"):
            errors = [
                ErrorDetail(
                    path="$",
                    rule="contentType",
                    message=f"content type {msg.content_type!r} is not application/json",
                )
            ]
        elif mtype not in CLAIM_TYPES:
            errors = [
                ErrorDetail(
                    path="$",
                    rule="messageType",
                    message=f"message type {str(mtype)[:64]!r} is not one of "
                    + ", ".join(CLAIM_TYPES),
                )
            ]
        else:
            try:
                parsed = contract.validate(mtype, msg.body)
            except contract.ContractError as e:
                errors = e.details
            else:
                assert isinstance(parsed, m.ClaimPlaced | m.ClaimWithdrawn)
                model = parsed
        raw: dict[str, Any] = {}
        if model is None:
            # An unreadable row of an import still belongs to its batch: the importer puts
            # the batch in the AMQP headers, so the batch can be reconciled all the same.
            headers = {k: v for k, v in (msg.headers or {}).items() if k in _HEADER_FIELDS}
            raw = {**_raw_fields(orjson.dumps(headers, default=str)), **_raw_fields(msg.body)}
        return _Parsed(msg, mid, model, errors, raw)

    # -- the transaction ----------------------------------------------------------------

    async def handle(self, batch: Sequence[Incoming]) -> list[OutMessage]:
        """Process a batch of claim messages; returns what to publish once committed."""
        parsed = [self.parse(msg) for msg in batch]
        profiles = await self.partners.profiles()
        open_cases = dict(self.partners.open_cases())
        assigned: dict[str, int] = {}

        async def work(tx: Tx) -> Changeset:
            assigned.clear()
            now = self.clock()
            return await _IntakeRun(self, tx, now, profiles, open_cases, assigned).run(parsed)

        changes = await self.store.transact(work)
        for partner_id, n in assigned.items():
            self.partners.note_assigned(partner_id, n)
        return changes.outbox


class _IntakeRun:
    """One attempt at one batch, inside one transaction."""

    def __init__(
        self,
        service: IntakeService,
        tx: Tx,
        now: dt.datetime,
        profiles: Sequence[Any],
        open_cases: Mapping[str, int],
        assigned: dict[str, int],
    ) -> None:
        self.s = service
        self.tx = tx
        self.now = now
        self.profiles = profiles
        self.open_cases = dict(open_cases)
        self.assigned = assigned
        self.cs = Changeset()
        self.claims: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, CaseState] = {}
        self.loaded: dict[str, int] = {}
        self.touched: list[str] = []
        self.dirty_claims: dict[str, None] = {}

    async def run(self, parsed: Sequence[_Parsed]) -> Changeset:
        seen = await self.tx.seen(p.message_id for p in parsed)
        fresh: list[_Parsed] = []
        for p in parsed:
            if p.message_id in seen:
                continue  # processed before: its effects and outbox are already stored
            seen.add(p.message_id)
            fresh.append(p)
        keys = {p.model.business_key for p in fresh if p.model is not None}
        self.claims = {k: dict(v) for k, v in (await self.tx.claims(keys)).items()}
        case_ids = {c["case_id"] for c in self.claims.values()}
        for p in fresh:
            if isinstance(p.model, m.ClaimPlaced):
                case_ids.add(case_id_for(p.model.creditor_entity, p.model.debtor.model_dump()))
        self.cases = dict(await self.tx.cases(case_ids))
        self.loaded = {cid: st.version for cid, st in self.cases.items()}
        for p in fresh:
            self._one(p)
        self._route()
        for cid in dict.fromkeys(self.touched):
            self.cs.cases.append((self.cases[cid], self.loaded.get(cid, 0)))
        self.cs.claims.extend(self.claims[k] for k in self.dirty_claims)
        return self.cs

    def _one(self, p: _Parsed) -> None:
        if p.model is None:
            self._receipt(p, ReceiptStatus.REJECTED, errors=p.errors)
            return
        model = p.model
        key = model.business_key
        existing = self.claims.get(key)
        try:
            if isinstance(model, m.ClaimWithdrawn):
                status, case_id = self._withdraw(p, model, existing)
            else:
                status, case_id = self._place(p, model, existing)
        except _Reject as r:
            self._receipt(p, ReceiptStatus.REJECTED, errors=[r.detail])
            return
        self._receipt(p, status, case_id=case_id)

    def _place(
        self, p: _Parsed, claim: m.ClaimPlaced, existing: dict[str, Any] | None
    ) -> tuple[ReceiptStatus, str | None]:
        digest = content_hash(claim)
        key = claim.business_key
        debtor = claim.debtor.model_dump()
        case_id = case_id_for(claim.creditor_entity, debtor)
        amended = False
        if existing is not None and existing["status"] != "withdrawn":
            if existing["content_hash"] == digest:
                return ReceiptStatus.DUPLICATE, existing["case_id"]
            if existing["debtor_key"] != debtor_key(debtor):
                raise _Reject(
                    "$.debtor",
                    "immutable",
                    f"claim {key} belongs to another debtor; withdraw it and place it again",
                )
            case_id = existing["case_id"]
            amended = True
        elif isinstance(claim, m.ClaimAmended):
            raise _Reject("$.invoice_number", "exists", f"there is no open claim {key} to amend")
        state = self.cases.get(case_id)
        try:
            events = lifecycle.add_claim(
                state, case_id, claim, message_id=p.message_id, now=self.now, amended=amended
            )
        except DomainError as e:
            raise _Reject("$.currency", "caseCurrency", e.message) from e
        self._commit(case_id, state, events)
        change = m.CaseChange.CLAIM_AMENDED if amended else m.CaseChange.CLAIM_ADDED
        self._tell_partner(state, change, claim.invoice_number, p.message_id)
        self.claims[key] = {
            "_id": key,
            "case_id": case_id,
            "creditor_id": claim.creditor_id,
            "creditor_entity": claim.creditor_entity,
            "invoice_number": claim.invoice_number,
            "debtor_key": debtor_key(debtor),
            "content_hash": digest,
            "status": "open",
            "last_message_id": p.message_id,
            "body": claim.model_dump(mode="json", exclude_none=True),
            "updated_at": self.now,
        }
        self.dirty_claims[key] = None
        return (ReceiptStatus.AMENDED if amended else ReceiptStatus.ACCEPTED), case_id

    def _withdraw(
        self, p: _Parsed, w: m.ClaimWithdrawn, existing: dict[str, Any] | None
    ) -> tuple[ReceiptStatus, str | None]:
        if existing is None:
            raise _Reject(
                "$.invoice_number", "exists", f"there is no claim {w.business_key} to withdraw"
            )
        case_id = existing["case_id"]
        if existing["status"] == "withdrawn":
            return ReceiptStatus.DUPLICATE, case_id
        state = self.cases[case_id]
        previous_partner, previous_assignment = state.partner_id, state.assignment_id
        events = lifecycle.withdraw_claim(
            state,
            w.invoice_number,
            reason=w.reason or "withdrawn by the creditor",
            message_id=p.message_id,
            now=self.now,
        )
        self._commit(case_id, state, events)
        self._tell_partner(state, m.CaseChange.CLAIM_WITHDRAWN, w.invoice_number, p.message_id)
        if previous_partner and self.cases[case_id].partner_id is None:
            assert previous_assignment is not None
            self.cs.outbox.append(
                outgoing.recalled(
                    previous_partner,
                    case_id,
                    previous_assignment,
                    "all claims withdrawn by the creditor",
                    self.now,
                )
            )
            self.assigned[previous_partner] = self.assigned.get(previous_partner, 0) - 1
        self.claims[w.business_key] = {
            **existing,
            "status": "withdrawn",
            "last_message_id": p.message_id,
            "updated_at": self.now,
        }
        self.dirty_claims[w.business_key] = None
        return ReceiptStatus.WITHDRAWN, case_id

    def _commit(self, case_id: str, state: CaseState | None, events: list[Event]) -> None:
        new = fold(events, state)
        assert new is not None
        self.cases[case_id] = new
        self.cs.events.extend(events)
        self.touched.append(case_id)

    def _tell_partner(
        self, before: CaseState | None, change: m.CaseChange, invoice_number: str, cause: str
    ) -> None:
        """``case.updated`` to the partner that held the case before the claim message
        ``cause`` changed it and still holds it (a recall is told by ``case.recalled``)."""
        if before is None or before.lifecycle not in WITH_PARTNER:
            return
        after = self.cases[before.case_id]
        if after.lifecycle in WITH_PARTNER and after.assignment_id == before.assignment_id:
            self.cs.outbox.append(
                outgoing.case_updated(after, change, invoice_number, cause=cause, now=self.now)
            )

    def _route(self) -> None:
        for case_id in dict.fromkeys(self.touched):
            state = self.cases[case_id]
            if (
                state.lifecycle not in (Lifecycle.NEW, Lifecycle.UNASSIGNED)
                or not state.open_claims
            ):
                continue
            counts = {
                k: self.open_cases.get(k, 0) + self.assigned.get(k, 0)
                for k in self.open_cases.keys() | self.assigned.keys()
            }
            placed = place(state, self.profiles, counts, self.now)
            if not placed.events:
                continue
            self._commit(case_id, state, placed.events)
            self.cs.outbox.extend(placed.outbox)
            if placed.state.partner_id:
                pid = placed.state.partner_id
                self.assigned[pid] = self.assigned.get(pid, 0) + 1
            else:
                log.info(
                    "case %s left unassigned: %s",
                    case_id,
                    placed.decision.reason if placed.decision else "",
                )

    def _receipt(
        self,
        p: _Parsed,
        status: ReceiptStatus,
        *,
        case_id: str | None = None,
        errors: Sequence[ErrorDetail] = (),
    ) -> None:
        model = p.model
        fields: dict[str, Any] = (
            model.model_dump(
                include={
                    "creditor_id",
                    "creditor_entity",
                    "invoice_number",
                    "batch_id",
                    "batch_size",
                }
            )
            if model is not None
            else dict(p.raw)
        )
        creditor = (
            fields.get("creditor_id")
            or (p.incoming.headers.get("creditor_id") if p.incoming.headers else None)
            or p.incoming.user_id
            or self.s.default_creditor
        )
        creditor = str(creditor)
        self.cs.outbox.append(
            outgoing.receipt(
                claim_message_id=p.message_id,
                creditor_id=creditor,
                status=status,
                now=self.now,
                creditor_entity=fields.get("creditor_entity"),
                invoice_number=fields.get("invoice_number"),
                case_id=case_id,
                batch_id=fields.get("batch_id"),
                errors=errors,
            )
        )
        self.cs.inbox.append(
            {
                "_id": p.message_id,
                "queue": "hub.claims",
                "type": (p.incoming.type or "")[:64],
                "status": status.value,
                "case_id": case_id,
                "received_at": self.now,
            }
        )
        if status is ReceiptStatus.REJECTED:
            self.cs.rejections.append(
                {
                    "_id": f"claim:{p.message_id}",
                    "source": "creditor",
                    "sender": creditor,
                    "message_id": p.message_id,
                    "type": (p.incoming.type or "")[:64],
                    "errors": [e.model_dump() for e in errors],
                    "body_excerpt": p.incoming.body[:2000].decode("utf-8", "replace"),
                    "received_at": self.now,
                }
            )
        batch_id = fields.get("batch_id")
        if batch_id:
            self.cs.count(creditor, batch_id, fields.get("batch_size"), status.value)


class _Reject(Exception):
    def __init__(self, path: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.detail = ErrorDetail(path=path, rule=rule, message=message[:1000])
