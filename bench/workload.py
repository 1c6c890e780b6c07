"""What the benchmark sends: claims as the creditor's invoicing system writes them, case
documents for the raw write rate, partners' reports. Everything is generated lazily from
an index, so a 100,000-claim batch is never held in memory."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

#: The benchmark's partner network: one partner per country, each its own AMQP user.
COUNTRIES: tuple[tuple[str, str, str], ...] = (
    ("DE", "EUR", "de"),
    ("FR", "EUR", "fr"),
    ("ES", "EUR", "es"),
    ("IT", "EUR", "it"),
    ("NL", "EUR", "nl"),
    ("PL", "PLN", "pl"),
    ("GB", "GBP", "en"),
    ("US", "USD", "en"),
)

CREDITOR_ID = "flexspace"

_NOTE = (
    "Monthly membership and meeting-room charges; reminder letters sent on day 7 and "
    "day 21 went unanswered. Debtor disputes nothing in writing. Please start the amicable "
    "phase with a call to accounts payable and a letter before action if there is no "
    "answer within the statutory period."
)


@dataclass(frozen=True)
class Claim:
    """One generated ``claim.placed``: its AMQP message id, invoice number and body."""

    message_id: str
    invoice_number: str
    country: str
    body: bytes


def _amount(i: int) -> str:
    # Deterministic, varied amounts between 100.00 and 9,999.99.
    cents = 10_000 + int(hashlib.blake2b(str(i).encode(), digest_size=4).hexdigest(), 16) % 990_000
    return f"{cents // 100}.{cents % 100:02d}"


def claim_document(
    tag: str,
    i: int,
    *,
    claims_per_case: int = 1,
    prefix: str = "B",
    batch: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The ``i``-th claim of a run; claims ``k * claims_per_case ...`` share a debtor."""
    d = i // claims_per_case
    country, currency, language = COUNTRIES[d % len(COUNTRIES)]
    entity = f"FS-{country}-{(d // len(COUNTRIES)) % 40 + 1:03d}"
    doc: dict[str, Any] = {
        "creditor_id": CREDITOR_ID,
        "creditor_entity": entity,
        "invoice_number": f"{prefix}{tag}-{i:07d}",
        "invoice_date": "2026-09-01",
        "due_date": "2026-10-01",
        "currency": currency,
        "principal": _amount(i),
        "interest": "12.50",
        "fees": "40.00",
        "contract_ref": f"MSA-{entity}-{d:07d}",
        "notes": _NOTE,
        "debtor": {
            "name": f"Debtor {prefix}{tag} {d} Trading Ltd",
            "kind": "company",
            "registration_id": f"REG-{country}-{prefix}{tag}-{d:07d}",
            "vat_id": f"{country}{d:09d}",
            "country": country,
            "address": {
                "line1": f"{d % 400 + 1} Commerce Street",
                "line2": f"Suite {d % 90 + 10}",
                "city": "Metropolis",
                "postal_code": f"{d % 90000 + 10000}",
                "country": country,
            },
            "email": f"accounts.payable.{d}@debtor-{d % 1000}.example.com",
            "phone": f"+49 30 {d % 10_000_000:07d}",
            "language": language,
        },
    }
    if batch is not None:
        doc["batch_id"], doc["batch_size"] = batch
    return doc


def claims(
    tag: str,
    count: int,
    *,
    claims_per_case: int = 1,
    prefix: str = "B",
    batch: tuple[str, int] | None = None,
) -> Iterator[Claim]:
    """The run's claims, one at a time."""
    for i in range(count):
        doc = claim_document(tag, i, claims_per_case=claims_per_case, prefix=prefix, batch=batch)
        yield Claim(
            message_id=f"{prefix}{tag}-{i}",
            invoice_number=doc["invoice_number"],
            country=doc["debtor"]["country"],
            body=orjson.dumps(doc),
        )


def cases_for(claims_count: int, claims_per_case: int) -> int:
    """How many cases ``claims_count`` claims make (each case has its own debtor)."""
    return -(-claims_count // claims_per_case)


def case_document(i: int, tag: str) -> dict[str, Any]:
    """A document of a case's size and shape (about 2 KB of BSON), for the raw write rate."""
    claim = claim_document(tag, i)
    now = dt.datetime.now(dt.UTC)
    invoice = claim["invoice_number"]
    return {
        "_id": f"C-{tag.upper()}{i:010d}",
        "creditor_id": CREDITOR_ID,
        "creditor_entity": claim["creditor_entity"],
        "debtor": claim["debtor"],
        "country": claim["debtor"]["country"],
        "currency": claim["currency"],
        "lifecycle": "assigned",
        "phase": "amicable",
        "claims": {
            invoice: {
                "invoice_number": invoice,
                "invoice_date": claim["invoice_date"],
                "due_date": claim["due_date"],
                "principal": claim["principal"],
                "interest": claim["interest"],
                "fees": claim["fees"],
                "contract_ref": claim["contract_ref"],
                "phase": "amicable",
                "withdrawn": False,
            }
        },
        "partner_id": f"b{tag}-{claim['debtor']['country'].lower()}",
        "assignment_id": f"A-{tag}-{i:010d}-1",
        "assignments": 1,
        "assigned_at": now,
        "accept_by": now + dt.timedelta(hours=72),
        "accepted_at": None,
        "first_action_at": None,
        "placed_at": now,
        "collected": "0",
        "promised": "0",
        "pending_settlements": {},
        "settlement_ids": [],
        "declined_by": [],
        "close_code": None,
        "closed_at": None,
        "version": 3,
        "total": claim["principal"],
        "debtor_name": claim["debtor"]["name"],
        "open": True,
        "placed_month": now.strftime("%Y-%m"),
        "invoice_numbers": [invoice],
        "notes": claim["notes"] + " " + claim["notes"],
        "history": [
            {"seq": s, "kind": k, "at": now, "actor": "hub"}
            for s, k in enumerate(("claim_added", "assigned", "accepted", "activity"), 1)
        ],
    }


def accepted(case_id: str, assignment_id: str | None, now: dt.datetime) -> bytes:
    body: dict[str, Any] = {"case_id": case_id, "occurred_at": now.isoformat()}
    if assignment_id:
        body["assignment_id"] = assignment_id
    return orjson.dumps(body)


_KINDS = ("call", "email", "letter", "call", "meeting")
_OUTCOMES = ("no_contact", "left_message", "right_party_contact", "sent", "other")


def activity(case_id: str, j: int, now: dt.datetime) -> bytes:
    return orjson.dumps(
        {
            "case_id": case_id,
            "occurred_at": now.isoformat(),
            "kind": _KINDS[j % len(_KINDS)],
            "outcome": _OUTCOMES[j % len(_OUTCOMES)],
            "note": f"Attempt {j}: spoke to the switchboard, accounts payable to call back.",
        }
    )
