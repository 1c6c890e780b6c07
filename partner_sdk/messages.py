"""The AMQP contract v1 as pydantic models: one class per message type.

These models and the JSON Schemas in ``schemas/`` describe the same documents;
``tests/unit/test_contract.py`` proves that they accept and reject alike. The hub
imports them from here so that the partner SDK and the hub can never drift apart.

Amounts are decimal strings (``"1234.50"``), never floats; currencies are ISO 4217,
countries ISO 3166-1 alpha-2, timestamps RFC 3339 with an offset.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from partner_sdk.codes import COUNTRIES, CURRENCIES

__all__ = [
    "MESSAGE_TYPES",
    "ActivityKind",
    "ActivityOutcome",
    "Address",
    "AssignedClaim",
    "BatchReconciled",
    "CaseAccepted",
    "CaseActivity",
    "CaseAssigned",
    "CaseChange",
    "CaseClosed",
    "CaseDeclined",
    "CaseDispute",
    "CaseLegalStep",
    "CasePayment",
    "CasePromise",
    "CaseRecalled",
    "CaseUpdated",
    "ClaimAmended",
    "ClaimPlaced",
    "ClaimReceipt",
    "ClaimWithdrawn",
    "CloseCode",
    "Debtor",
    "DebtorKind",
    "DocumentAdded",
    "DocumentContent",
    "DocumentKind",
    "DocumentRequested",
    "ErrorDetail",
    "ErrorReply",
    "Installment",
    "Message",
    "PartnerDebtor",
    "Phase",
    "ReceiptStatus",
    "SettlementDecided",
    "SettlementProposed",
    "model_for",
]

MONEY_PATTERN = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$"
# RFC 3339 date-time with seconds and a mandatory offset. The ranges keep out what the
# model cannot hold (hour 24, leap second 60, offsets of 24 h or more), so that a schema
# validator that only checks the pattern (``format`` is an annotation by default in JSON
# Schema 2020-12) agrees with the model on everything but impossible days (Feb 30).
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# No "@", no control characters, no Unicode white space. Spelled out rather than ``\s``
# because ``\s`` differs between the Rust (pydantic), Python and ECMA-262 regex engines.
_EMAIL_CHAR = r"[^@\x00-\x20\x7f-\xa0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"
EMAIL_PATTERN = rf"^{_EMAIL_CHAR}+@{_EMAIL_CHAR}+$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
PARTNER_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,31}$"

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


def _country(value: str) -> str:
    if value not in COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return value


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return value


# ``$`` in Python's ``re`` also matches before a final newline: anchor with ``\Z`` here.
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN.removesuffix("$") + r"\Z")
_DATE_RE = re.compile(DATE_PATTERN.removesuffix("$") + r"\Z")


def _timestamp_text(value: object) -> object:
    """Only the RFC 3339 form the schema describes (pydantic alone also takes others).

    The field itself is lax (``Strict(False)``): after a before-validator pydantic would
    otherwise want a ``datetime`` object. This check lets through only a ``datetime`` or a
    string of the schema's pattern, so nothing else gets coerced.
    """
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be a valid datetime")
    if not _TIMESTAMP_RE.match(value):
        raise PydanticCustomError(
            "timestamp_format",
            "Timestamp must be RFC 3339 with seconds and an offset, e.g. 2025-01-31T12:00:00Z",
        )
    return value


def _date_text(value: object) -> object:
    """Only a ``date`` or a ``YYYY-MM-DD`` string (see ``_timestamp_text``)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("date_type", "Input should be a valid date")
    if not _DATE_RE.match(value):
        raise PydanticCustomError("date_format", "Date must be YYYY-MM-DD")
    return value


def _integral(value: object) -> object:
    """JSON has one number type: ``3.0`` is an integer to JSON Schema, so also to the model."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Money = Annotated[str, StringConstraints(pattern=MONEY_PATTERN, max_length=20)]
Country = Annotated[str, StringConstraints(min_length=2, max_length=2), AfterValidator(_country)]
Currency = Annotated[str, StringConstraints(min_length=3, max_length=3), AfterValidator(_currency)]
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=64)]
PartnerId = Annotated[str, StringConstraints(pattern=PARTNER_ID_PATTERN, max_length=32)]
Text = Annotated[str, StringConstraints(max_length=2000)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Timestamp = Annotated[AwareDatetime, Strict(False), BeforeValidator(_timestamp_text)]
Date = Annotated[dt.date, Strict(False), BeforeValidator(_date_text)]
Count = Annotated[int, BeforeValidator(_integral), Field(ge=0)]
BatchSize = Annotated[int, BeforeValidator(_integral), Field(ge=1, le=10_000_000)]


class Phase(StrEnum):
    AMICABLE = "amicable"
    LEGAL = "legal"
    ENFORCEMENT = "enforcement"


class DebtorKind(StrEnum):
    PERSON = "person"
    COMPANY = "company"


class ReceiptStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    AMENDED = "amended"
    WITHDRAWN = "withdrawn"
    REJECTED = "rejected"


class ActivityKind(StrEnum):
    CALL = "call"
    EMAIL = "email"
    LETTER = "letter"
    MEETING = "meeting"
    OTHER = "other"


class ActivityOutcome(StrEnum):
    RIGHT_PARTY_CONTACT = "right_party_contact"
    NO_CONTACT = "no_contact"
    WRONG_PARTY = "wrong_party"
    LEFT_MESSAGE = "left_message"
    REFUSED = "refused"
    SENT = "sent"
    OTHER = "other"


class CloseCode(StrEnum):
    PAID = "paid"
    SETTLED = "settled"
    UNCOLLECTIBLE = "uncollectible"
    INSOLVENT = "insolvent"
    WITHDRAWN = "withdrawn"
    STATUTE_BARRED = "statute_barred"
    RETURNED = "returned"


class CaseChange(StrEnum):
    """What changed on a case a partner holds (``case.updated``)."""

    CLAIM_ADDED = "claim_added"
    CLAIM_AMENDED = "claim_amended"
    CLAIM_WITHDRAWN = "claim_withdrawn"


class DocumentKind(StrEnum):
    LETTER = "letter"
    AGREEMENT = "agreement"
    COURT_FILING = "court_filing"
    PROOF_OF_PAYMENT = "proof_of_payment"
    OTHER = "other"


class _Strict(BaseModel):
    """Base of every contract model: unknown fields are errors, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Message(_Strict):
    """A message body. ``TYPE`` is the AMQP ``type`` property it travels under."""

    TYPE: ClassVar[str] = ""

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Any:
        return cls.model_validate_json(data)


# --- claims (creditor -> hub) ---------------------------------------------------------


class Address(_Strict):
    line1: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    line2: Annotated[str, StringConstraints(max_length=200)] | None = None
    city: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    postal_code: Annotated[str, StringConstraints(max_length=20)] | None = None
    region: Annotated[str, StringConstraints(max_length=100)] | None = None
    country: Country


class Debtor(_Strict):
    name: ShortText
    kind: DebtorKind
    registration_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    vat_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    country: Country
    address: Address
    email: Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=254)] | None = None
    phone: (
        Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()./-]{4,32}$", max_length=32)] | None
    ) = None
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$", max_length=2)] | None = None


class ClaimPlaced(Message):
    """A claim placed by the creditor: one unpaid invoice of one legal entity."""

    TYPE: ClassVar[str] = "claim.placed"

    creditor_id: PartnerId
    creditor_entity: Identifier
    invoice_number: Identifier
    invoice_date: Date
    due_date: Date
    currency: Currency
    principal: Money
    interest: Money = "0"
    fees: Money = "0"
    debtor: Debtor
    contract_ref: Annotated[str, StringConstraints(max_length=64)] | None = None
    notes: Text | None = None
    phase: Phase = Phase.AMICABLE
    batch_id: Identifier | None = None
    batch_size: BatchSize | None = None

    @property
    def business_key(self) -> str:
        return f"{self.creditor_entity}/{self.invoice_number}"

    @property
    def total(self) -> Decimal:
        return Decimal(self.principal) + Decimal(self.interest) + Decimal(self.fees)


class ClaimAmended(ClaimPlaced):
    """A new version of a claim already placed (same business key), replacing it whole."""

    TYPE: ClassVar[str] = "claim.amended"


class ClaimWithdrawn(Message):
    TYPE: ClassVar[str] = "claim.withdrawn"

    creditor_id: PartnerId
    creditor_entity: Identifier
    invoice_number: Identifier
    reason: Text | None = None
    batch_id: Identifier | None = None
    batch_size: BatchSize | None = None

    @property
    def business_key(self) -> str:
        return f"{self.creditor_entity}/{self.invoice_number}"


class ErrorDetail(_Strict):
    """Why a message was refused: where (a JSON path) and which rule it broke."""

    path: Annotated[str, StringConstraints(max_length=300)]
    rule: Annotated[str, StringConstraints(max_length=64)]
    message: Annotated[str, StringConstraints(max_length=1000)]


class ClaimReceipt(Message):
    TYPE: ClassVar[str] = "claim.receipt"

    claim_message_id: Annotated[str, StringConstraints(max_length=200)]
    creditor_id: Annotated[str, StringConstraints(max_length=64)]
    status: ReceiptStatus
    creditor_entity: Annotated[str, StringConstraints(max_length=64)] | None = None
    invoice_number: Annotated[str, StringConstraints(max_length=64)] | None = None
    case_id: Identifier | None = None
    batch_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    errors: Annotated[list[ErrorDetail], Field(max_length=50)] = []
    received_at: Timestamp


class BatchReconciled(Message):
    TYPE: ClassVar[str] = "batch.reconciled"

    creditor_id: PartnerId
    batch_id: Identifier
    expected: Count
    received: Count
    accepted: Count
    duplicate: Count
    amended: Count
    withdrawn: Count = 0
    rejected: Count
    completed_at: Timestamp


class _Document(_Strict):
    """A document and its description, uploaded (``document.added``) or downloaded
    (``document.content``): ``size`` and ``sha256`` are the decoded content's, and the
    receiver checks them."""

    document_id: Identifier
    kind: DocumentKind
    filename: Annotated[str, StringConstraints(pattern=r"^[^/\\\x00]{1,200}$", max_length=200)]
    content_type: Literal[
        "application/pdf",
        "image/png",
        "image/jpeg",
        "text/plain",
        "text/csv",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ]
    size: Annotated[int, BeforeValidator(_integral), Field(ge=1, le=MAX_DOCUMENT_BYTES)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", max_length=64)]
    # base64 of at most 20 MiB
    content_base64: Annotated[str, StringConstraints(min_length=4, max_length=27_962_028)]


# --- hub -> partner ---------------------------------------------------------------------


class PartnerDebtor(_Strict):
    """The debtor as a partner sees it: what collection needs, nothing more."""

    name: ShortText
    kind: DebtorKind
    registration_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    vat_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    country: Country
    address: Address
    email: Annotated[str, StringConstraints(max_length=254)] | None = None
    phone: Annotated[str, StringConstraints(max_length=32)] | None = None
    language: Annotated[str, StringConstraints(max_length=2)] | None = None


class AssignedClaim(_Strict):
    invoice_number: Identifier
    invoice_date: Date
    due_date: Date
    principal: Money
    interest: Money
    fees: Money
    contract_ref: Annotated[str, StringConstraints(max_length=64)] | None = None


class CaseAssigned(Message):
    TYPE: ClassVar[str] = "case.assigned"

    case_id: Identifier
    assignment_id: Identifier
    partner_id: PartnerId
    creditor_entity: Identifier
    debtor: PartnerDebtor
    claims: Annotated[list[AssignedClaim], Field(min_length=1, max_length=500)]
    currency: Currency
    total: Money
    phase: Phase
    assigned_at: Timestamp
    accept_by: Timestamp


class CaseRecalled(Message):
    TYPE: ClassVar[str] = "case.recalled"

    case_id: Identifier
    assignment_id: Identifier
    reason: Text
    recalled_at: Timestamp


class CaseUpdated(Message):
    """The creditor changed the claims of a case the partner holds: one was added, amended
    or withdrawn while others stay open. ``claims`` and ``total`` are the case's open claims
    now; the assignment is unchanged (a withdrawal of the last claim is a ``case.recalled``)."""

    TYPE: ClassVar[str] = "case.updated"

    case_id: Identifier
    assignment_id: Identifier
    partner_id: PartnerId
    change: CaseChange
    invoice_number: Identifier
    claims: Annotated[list[AssignedClaim], Field(min_length=1, max_length=500)]
    currency: Currency
    total: Money
    updated_at: Timestamp


class SettlementDecided(Message):
    TYPE: ClassVar[str] = "settlement.decided"

    case_id: Identifier
    settlement_id: Identifier
    decision: Literal["approved", "rejected"]
    decided_by: ShortText
    note: Text | None = None
    decided_at: Timestamp


class DocumentContent(_Document, Message):
    """A document of a case, sent to the partner that asked for it (``document.requested``)."""

    TYPE: ClassVar[str] = "document.content"

    in_reply_to: Annotated[str, StringConstraints(max_length=200)]
    case_id: Identifier


class ErrorReply(Message):
    """The hub's answer to a partner message it refused; nothing was changed."""

    TYPE: ClassVar[str] = "error.reply"

    in_reply_to: Annotated[str, StringConstraints(max_length=200)]
    in_reply_to_type: Annotated[str, StringConstraints(max_length=64)] | None = None
    case_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    code: Literal[
        "invalid_message",
        "unknown_case",
        "not_assignee",
        "illegal_transition",
        "invalid_document",
        "unknown_legal_step",
        "unknown_type",
        "unknown_document",
    ]
    message: Annotated[str, StringConstraints(max_length=1000)]
    errors: Annotated[list[ErrorDetail], Field(max_length=50)] = []
    occurred_at: Timestamp


# --- partner -> hub ---------------------------------------------------------------------


class _PartnerReport(Message):
    case_id: Identifier
    occurred_at: Timestamp


class CaseAccepted(_PartnerReport):
    TYPE: ClassVar[str] = "case.accepted"

    assignment_id: Identifier | None = None


class CaseDeclined(_PartnerReport):
    TYPE: ClassVar[str] = "case.declined"

    assignment_id: Identifier | None = None
    reason: Text


class CaseActivity(_PartnerReport):
    TYPE: ClassVar[str] = "case.activity"

    kind: ActivityKind
    outcome: ActivityOutcome
    note: Text | None = None


class Installment(_Strict):
    due_date: Date
    amount: Money


class CasePromise(_PartnerReport):
    TYPE: ClassVar[str] = "case.promise"

    amount: Money
    currency: Currency
    due_date: Date
    installments: Annotated[list[Installment], Field(max_length=120)] = []
    note: Text | None = None


class CasePayment(_PartnerReport):
    TYPE: ClassVar[str] = "case.payment"

    amount: Money
    currency: Currency
    reference: Annotated[str, StringConstraints(max_length=64)] | None = None


class SettlementProposed(_PartnerReport):
    TYPE: ClassVar[str] = "settlement.proposed"

    settlement_id: Identifier
    amount: Money
    currency: Currency
    terms: Text | None = None


class CaseDispute(_PartnerReport):
    TYPE: ClassVar[str] = "case.dispute"

    status: Literal["opened", "resolved"]
    reason: Text


class CaseLegalStep(_PartnerReport):
    TYPE: ClassVar[str] = "case.legal_step"

    country: Country
    step: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$", max_length=64)]
    phase: Phase
    note: Text | None = None


class CaseClosed(_PartnerReport):
    TYPE: ClassVar[str] = "case.closed"

    close_code: CloseCode
    note: Text | None = None


class DocumentAdded(_Document, _PartnerReport):
    """A document for a case, uploaded by the partner the case is assigned to."""

    TYPE: ClassVar[str] = "document.added"


class DocumentRequested(_PartnerReport):
    """A partner asks for a document of a case assigned to it; the hub answers with a
    ``document.content`` (or an ``error.reply``) whose ``in_reply_to`` is this message id."""

    TYPE: ClassVar[str] = "document.requested"

    document_id: Identifier


_ALL: tuple[type[Message], ...] = (
    ClaimPlaced,
    ClaimAmended,
    ClaimWithdrawn,
    ClaimReceipt,
    BatchReconciled,
    CaseAssigned,
    CaseRecalled,
    CaseUpdated,
    CaseAccepted,
    CaseDeclined,
    CaseActivity,
    CasePromise,
    CasePayment,
    SettlementProposed,
    SettlementDecided,
    CaseDispute,
    CaseLegalStep,
    CaseClosed,
    DocumentAdded,
    DocumentRequested,
    DocumentContent,
    ErrorReply,
)

MESSAGE_TYPES: dict[str, type[Message]] = {m.TYPE: m for m in _ALL}


def model_for(message_type: str) -> type[Message]:
    """The model of a message type; ``KeyError`` for a type the contract does not know."""
    return MESSAGE_TYPES[message_type]
