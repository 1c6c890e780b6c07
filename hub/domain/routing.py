"""Routing rules as data and a pure match.

A partner's profile says which countries and phases it covers, the amount band it takes,
how many open cases it can hold, its SLA and its weight. ``choose_partner`` keeps the
partners that fit a case and picks one by weighted rendezvous hashing on the case id:
weighted, stable (a replay of the same case picks the same partner) and spread evenly.
No partner fits: the case stays ``unassigned`` for the coordinator.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from partner_sdk.messages import Phase


@dataclass(frozen=True)
class PartnerProfile:
    partner_id: str
    countries: frozenset[str]
    phases: frozenset[Phase] = frozenset({Phase.AMICABLE})
    max_open_cases: int = 1000
    sla_hours: float = 48.0
    active: bool = True
    weight: float = 1.0
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    name: str = ""

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> PartnerProfile:
        def dec(v: Any) -> Decimal | None:
            return None if v in (None, "") else Decimal(str(v))

        return cls(
            partner_id=str(doc.get("partner_id") or doc["_id"]),
            countries=frozenset(str(c).upper() for c in doc.get("countries", ())),
            phases=frozenset(Phase(p) for p in doc.get("phases", ("amicable",))),
            max_open_cases=int(doc.get("max_open_cases", 1000)),
            sla_hours=float(doc.get("sla_hours", 48)),
            active=bool(doc.get("active", True)),
            weight=float(doc.get("weight", 1.0)),
            min_amount=dec(doc.get("min_amount")),
            max_amount=dec(doc.get("max_amount")),
            name=str(doc.get("name", "")),
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.partner_id,
            "name": self.name,
            "countries": sorted(self.countries),
            "phases": sorted(p.value for p in self.phases),
            "max_open_cases": self.max_open_cases,
            "sla_hours": self.sla_hours,
            "active": self.active,
            "weight": self.weight,
            "min_amount": None if self.min_amount is None else str(self.min_amount),
            "max_amount": None if self.max_amount is None else str(self.max_amount),
        }


@dataclass(frozen=True)
class RoutingRequest:
    case_id: str
    country: str
    phase: Phase
    amount: Decimal
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RoutingDecision:
    partner_id: str | None
    reason: str
    candidates: tuple[str, ...] = field(default_factory=tuple)


def _fits(p: PartnerProfile, req: RoutingRequest) -> str | None:
    """Why ``p`` cannot take the case, or None when it can (capacity aside)."""
    if not p.active:
        return "inactive"
    if req.country not in p.countries:
        return "country"
    if req.phase not in p.phases:
        return "phase"
    if p.min_amount is not None and req.amount < p.min_amount:
        return "amount"
    if p.max_amount is not None and req.amount > p.max_amount:
        return "amount"
    if p.partner_id in req.exclude:
        return "excluded"
    return None


def _score(case_id: str, p: PartnerProfile) -> float:
    digest = hashlib.blake2b(f"{case_id}|{p.partner_id}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # uniform in (0, 1)
    return -math.log(u) / max(p.weight, 1e-9)


def choose_partner(
    req: RoutingRequest,
    partners: Iterable[PartnerProfile],
    open_cases: Mapping[str, int],
) -> RoutingDecision:
    fitting = [p for p in partners if _fits(p, req) is None]
    if not fitting:
        return RoutingDecision(
            None, f"no active partner covers {req.country} / {req.phase.value} for {req.amount}"
        )
    with_room = [p for p in fitting if open_cases.get(p.partner_id, 0) < p.max_open_cases]
    names = tuple(sorted(p.partner_id for p in fitting))
    if not with_room:
        return RoutingDecision(None, "every fitting partner is at capacity", names)
    best = min(with_room, key=lambda p: _score(req.case_id, p))
    return RoutingDecision(best.partner_id, "matched", names)
