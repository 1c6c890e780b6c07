"""Placing a case with a partner: routing decision, events and the outgoing assignment."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hub.domain import lifecycle
from hub.domain.model import CaseState, Event, fold
from hub.domain.routing import PartnerProfile, RoutingDecision, RoutingRequest, choose_partner

from . import outgoing
from .ports import OutMessage


@dataclass
class Placement:
    state: CaseState
    events: list[Event] = field(default_factory=list)
    outbox: list[OutMessage] = field(default_factory=list)
    decision: RoutingDecision | None = None


def place(
    state: CaseState,
    profiles: Sequence[PartnerProfile],
    open_cases: Mapping[str, int],
    now: dt.datetime,
    *,
    exclude: frozenset[str] = frozenset(),
    actor: str = "hub",
) -> Placement:
    """Route ``state`` (awaiting placement) to a partner, or leave it unassigned."""
    request = RoutingRequest(
        case_id=state.case_id,
        country=state.country,
        phase=state.phase,
        amount=state.total,
        exclude=exclude | frozenset(state.declined_by),
    )
    decision = choose_partner(request, profiles, open_cases)
    if decision.partner_id is None:
        events = lifecycle.leave_unassigned(state, reason=decision.reason, now=now)
        new = fold(events, state) or state
        return Placement(new, events, [], decision)
    profile = next(p for p in profiles if p.partner_id == decision.partner_id)
    events = lifecycle.assign(
        state, profile.partner_id, sla_hours=profile.sla_hours, now=now, actor=actor
    )
    new = fold(events, state) or state
    return Placement(new, events, [outgoing.assignment(new, now)], decision)
