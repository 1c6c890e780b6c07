"""Cases and their events.

A case's state is a fold of its events (``apply``), so the state as of any moment is
rebuilt by folding the events recorded up to that moment. Events carry JSON-ready data:
amounts as decimal strings, times as aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from partner_sdk.messages import Phase


class Lifecycle(StrEnum):
    NEW = "new"
    UNASSIGNED = "unassigned"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"
    DECLINED = "declined"
    RECALLED = "recalled"
    CLOSED = "closed"


#: Lifecycles in which the case sits with a partner.
WITH_PARTNER = frozenset(
    {Lifecycle.ASSIGNED, Lifecycle.ACCEPTED, Lifecycle.IN_PROGRESS, Lifecycle.ON_HOLD}
)
#: Lifecycles in which the case waits for the hub to place it.
AWAITING_PLACEMENT = frozenset(
    {Lifecycle.NEW, Lifecycle.UNASSIGNED, Lifecycle.DECLINED, Lifecycle.RECALLED}
)


class EventKind(StrEnum):
    CLAIM_ADDED = "claim_added"
    CLAIM_AMENDED = "claim_amended"
    CLAIM_WITHDRAWN = "claim_withdrawn"
    UNASSIGNED = "unassigned"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    RECALLED = "recalled"
    ACTIVITY = "activity"
    PROMISE = "promise"
    PAYMENT = "payment"
    SETTLEMENT_PROPOSED = "settlement_proposed"
    SETTLEMENT_DECIDED = "settlement_decided"
    DISPUTE_OPENED = "dispute_opened"
    DISPUTE_RESOLVED = "dispute_resolved"
    LEGAL_STEP = "legal_step"
    DOCUMENT_ADDED = "document_added"
    CLOSED = "closed"


@dataclass(frozen=True)
class Event:
    """Something that happened to a case. ``seq`` orders a case's events (1, 2, ...)."""

    case_id: str
    seq: int
    kind: EventKind
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    actor: str
    data: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None

    @property
    def event_id(self) -> str:
        return f"{self.case_id}#{self.seq:06d}"


@dataclass(frozen=True)
class CaseState:
    """The state of one case, derived from its events."""

    case_id: str
    creditor_id: str
    creditor_entity: str
    debtor: Mapping[str, Any]
    country: str
    currency: str
    lifecycle: Lifecycle = Lifecycle.NEW
    phase: Phase = Phase.AMICABLE
    #: invoice number -> claim fields (amounts as strings) and ``withdrawn``.
    claims: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    partner_id: str | None = None
    assignment_id: str | None = None
    assignments: int = 0
    assigned_at: dt.datetime | None = None
    accept_by: dt.datetime | None = None
    accepted_at: dt.datetime | None = None
    first_action_at: dt.datetime | None = None
    placed_at: dt.datetime | None = None
    collected: str = "0"
    promised: str = "0"
    pending_settlements: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Every settlement id ever proposed on this case; an id is never reused.
    settlement_ids: tuple[str, ...] = ()
    #: Partners that declined this case; routing passes them over.
    declined_by: tuple[str, ...] = ()
    close_code: str | None = None
    closed_at: dt.datetime | None = None
    #: Number of events folded into this state; the optimistic-concurrency version.
    version: int = 0

    @property
    def open_claims(self) -> dict[str, Mapping[str, Any]]:
        return {k: v for k, v in self.claims.items() if not v.get("withdrawn")}

    @property
    def total(self) -> Decimal:
        return sum(
            (
                Decimal(c["principal"]) + Decimal(c["interest"]) + Decimal(c["fees"])
                for c in self.open_claims.values()
            ),
            Decimal(0),
        )

    @property
    def is_open(self) -> bool:
        return self.lifecycle is not Lifecycle.CLOSED

    def replace(self, **changes: Any) -> CaseState:
        return dataclasses.replace(self, **changes)


_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def debtor_key(debtor: Mapping[str, Any]) -> str:
    """Identity of a debtor: its registration or VAT id, else its name and address."""
    country = str(debtor.get("country", ""))
    for id_field in ("registration_id", "vat_id"):
        value = debtor.get(id_field)
        if value:
            return f"{country}:{id_field}:{_NON_ALNUM.sub('', str(value).upper())}"
    address = debtor.get("address") or {}
    name = _NON_ALNUM.sub("", str(debtor.get("name", "")).upper())
    place = address.get("postal_code") or address.get("city") or ""
    postal = _NON_ALNUM.sub("", str(place).upper())
    return f"{country}:name:{name}:{postal}"


def case_id_for(creditor_entity: str, debtor: Mapping[str, Any]) -> str:
    """The case of (creditor entity, debtor): deterministic, so a replay finds the same case."""
    digest = hashlib.sha256(f"{creditor_entity}|{debtor_key(debtor)}".encode()).hexdigest()
    return f"C-{digest[:16].upper()}"


def add_money(a: str, b: str) -> str:
    return str(Decimal(a) + Decimal(b))


def fold(events: Iterable[Event], initial: CaseState | None = None) -> CaseState | None:
    """The state after ``events``, in order, starting from ``initial``."""
    from hub.domain.lifecycle import apply

    state = initial
    for event in events:
        state = apply(state, event)
    return state


def as_of(
    events: Iterable[Event], moment: dt.datetime, *, axis: str = "recorded"
) -> CaseState | None:
    """The case as the hub knew it at ``moment`` (axis ``recorded``), or as it stood
    by what had happened by then (axis ``occurred``). Events fold in recording order."""
    if axis not in ("recorded", "occurred"):
        raise ValueError(f"axis must be 'recorded' or 'occurred', not {axis!r}")
    chosen: list[Event] = []
    latest: dt.datetime | None = None
    for e in sorted(events, key=lambda e: e.seq):
        stamp = e.recorded_at if axis == "recorded" else e.occurred_at
        # An event counts as no earlier than the one before it (a back-dated report
        # cannot precede the case it reports on), so a prefix of the log is folded.
        latest = stamp if latest is None else max(latest, stamp)
        if latest > moment:
            break
        chosen.append(e)
    return fold(chosen)
