"""Files the file adapter writes for the partner, in ``<drop>/outgoing/``.

**Placement files** ``placements-<UTC time>-<hash>.csv``: one row per ``case.assigned``,
UTF-8, comma-separated, a header row, these columns:

==========================  ============================================================
message_id                  the hub's message id (the same on a repeated delivery)
case_id                     the hub's case id: quote it in every return row
assignment_id               unique per placement; dedupe on it (delivery is at least once)
assigned_at, accept_by      RFC 3339 UTC: accept (status code of case.accepted) by then
phase                       amicable, legal or enforcement
creditor_entity             the creditor's legal entity owed the money
currency, total             ISO 4217; decimal string, the sum of every claim
invoice_count               number of claims (invoices) in the case
invoice_numbers             the invoice numbers, separated by ``;``
oldest_due_date             YYYY-MM-DD
principal, interest, fees   decimal strings, summed over the claims
debtor_name, debtor_kind    ``kind``: company or person
debtor_registration_id,
debtor_vat_id
debtor_address_line1, debtor_address_line2, debtor_postal_code, debtor_city,
debtor_region, debtor_country
debtor_email, debtor_phone, debtor_language
==========================  ============================================================

**Notice files** ``notices-<UTC time>-<hash>.csv``: every other hub message, one row each,
columns ``message_id, type, case_id, assignment_id, reference, code, detail, source,
occurred_at``: ``case.updated`` (the creditor changed a claim: ``reference`` its invoice
number, ``code`` claim_added/claim_amended/claim_withdrawn, ``detail`` the case's new total
and currency), ``case.recalled`` (stop working the case; ``detail`` is the reason),
``settlement.decided`` (``reference`` the settlement id, ``code`` approved/rejected),
``error.reply`` (the hub refused a return row: ``reference`` its message id, ``code`` why,
``source`` the file and line it came from when the adapter still knows it).

Every file is written under a temporary name (``.<name>.tmp``) and renamed when complete,
so a partner that picks up ``*.csv`` never reads half a file.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Final

from partner_sdk import messages as m

__all__ = [
    "NOTICE_COLUMNS",
    "PLACEMENT_COLUMNS",
    "atomic_write",
    "notice_row",
    "placement_row",
    "write_csv",
]

PLACEMENT_COLUMNS: Final = (
    "message_id",
    "case_id",
    "assignment_id",
    "assigned_at",
    "accept_by",
    "phase",
    "creditor_entity",
    "currency",
    "total",
    "invoice_count",
    "invoice_numbers",
    "oldest_due_date",
    "principal",
    "interest",
    "fees",
    "debtor_name",
    "debtor_kind",
    "debtor_registration_id",
    "debtor_vat_id",
    "debtor_address_line1",
    "debtor_address_line2",
    "debtor_postal_code",
    "debtor_city",
    "debtor_region",
    "debtor_country",
    "debtor_email",
    "debtor_phone",
    "debtor_language",
)

NOTICE_COLUMNS: Final = (
    "message_id",
    "type",
    "case_id",
    "assignment_id",
    "reference",
    "code",
    "detail",
    "source",
    "occurred_at",
)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def placement_row(message_id: str, a: m.CaseAssigned) -> dict[str, str]:
    def total(attr: str) -> str:
        return str(sum((Decimal(getattr(c, attr)) for c in a.claims), Decimal(0)))

    d, addr = a.debtor, a.debtor.address
    return {
        "message_id": message_id,
        "case_id": a.case_id,
        "assignment_id": a.assignment_id,
        "assigned_at": _stamp(a.assigned_at),
        "accept_by": _stamp(a.accept_by),
        "phase": a.phase.value,
        "creditor_entity": a.creditor_entity,
        "currency": a.currency,
        "total": a.total,
        "invoice_count": str(len(a.claims)),
        "invoice_numbers": ";".join(c.invoice_number for c in a.claims),
        "oldest_due_date": min(c.due_date for c in a.claims).isoformat(),
        "principal": total("principal"),
        "interest": total("interest"),
        "fees": total("fees"),
        "debtor_name": d.name,
        "debtor_kind": d.kind.value,
        "debtor_registration_id": d.registration_id or "",
        "debtor_vat_id": d.vat_id or "",
        "debtor_address_line1": addr.line1,
        "debtor_address_line2": addr.line2 or "",
        "debtor_postal_code": addr.postal_code or "",
        "debtor_city": addr.city,
        "debtor_region": addr.region or "",
        "debtor_country": d.country,
        "debtor_email": d.email or "",
        "debtor_phone": d.phone or "",
        "debtor_language": d.language or "",
    }


def notice_row(message_id: str, msg: m.Message, source: str = "") -> dict[str, str]:
    """The notice row of a hub message other than ``case.assigned``."""
    row = dict.fromkeys(NOTICE_COLUMNS, "")
    row.update(message_id=message_id, type=msg.TYPE, source=source)
    if isinstance(msg, m.CaseRecalled):
        row.update(
            case_id=msg.case_id,
            assignment_id=msg.assignment_id,
            detail=msg.reason,
            occurred_at=_stamp(msg.recalled_at),
        )
    elif isinstance(msg, m.CaseUpdated):
        row.update(
            case_id=msg.case_id,
            assignment_id=msg.assignment_id,
            reference=msg.invoice_number,
            code=msg.change.value,
            detail=f"{msg.total} {msg.currency}",
            occurred_at=_stamp(msg.updated_at),
        )
    elif isinstance(msg, m.SettlementDecided):
        row.update(
            case_id=msg.case_id,
            reference=msg.settlement_id,
            code=msg.decision,
            detail=msg.note or "",
            occurred_at=_stamp(msg.decided_at),
        )
    elif isinstance(msg, m.ErrorReply):
        detail = msg.message
        if msg.errors:
            detail += " [" + "; ".join(f"{e.path}: {e.message}" for e in msg.errors[:5]) + "]"
        row.update(
            case_id=msg.case_id or "",
            reference=msg.in_reply_to,
            code=msg.code,
            detail=detail,
            occurred_at=_stamp(msg.occurred_at),
        )
    else:
        row["detail"] = msg.model_dump_json(exclude_none=True)[:2000]
    return row


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable (not possible on every platform)
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_csv(
    folder: Path,
    prefix: str,
    columns: Sequence[str],
    rows: Iterable[dict[str, str]],
    *,
    keys: Sequence[str],
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Path:
    """Write ``rows`` as ``<prefix>-<UTC time>-<hash of keys>.csv`` in ``folder``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:10]
    name = f"{prefix}-{now().astimezone(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{digest}.csv"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    atomic_write(path, buffer.getvalue().encode("utf-8"))
    return path
