"""The coordinator's commands: reassign, recall, decide settlements, and the queries of the
exception inbox (overdue acceptances, pending settlements, search, a case as of a moment).

Each command is one store transaction that writes the case's new events, its snapshot (at
the version it was loaded at, so a concurrent partner report makes the transaction retry
from its reads) and the outgoing messages; the caller publishes the returned messages
after the commit, and the outbox relay publishes whatever the caller could not.

Domain refusals (unknown case, a transition the lifecycle does not allow, an unknown or
unfit partner) raise ``hub.domain.errors.DomainError`` subclasses and change nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hub.domain import lifecycle
from hub.domain.errors import IllegalTransition, InvalidCommand, UnknownCase
from hub.domain.model import (
    AWAITING_PLACEMENT,
    WITH_PARTNER,
    CaseState,
    Event,
    Lifecycle,
    fold,
)
from hub.domain.model import as_of as state_as_of
from hub.domain.routing import PartnerProfile
from partner_sdk import messages as m

from . import outgoing
from .placement import place
from .ports import Changeset, Clock, OutMessage, PartnerDirectory, Store, Tx, utcnow

__all__ = [
    "CaseQueries",
    "Coordinator",
    "Settlement",
]

#: Where the query answers stop: the coordinator reads them on a screen.
DEFAULT_LIMIT = 200


class CaseQueries(Protocol):
    """Reads over many cases, outside transactions."""

    async def overdue(self, now: dt.datetime, limit: int) -> list[CaseState]: ...

    async def with_pending_settlements(self, limit: int) -> list[CaseState]: ...

    async def find(self, text: str, limit: int) -> list[CaseState]: ...

    async def list(
        self,
        *,
        lifecycle: str | None,
        partner_id: str | None,
        country: str | None,
        limit: int,
    ) -> list[CaseState]: ...


@dataclass(frozen=True)
class Settlement:
    """A settlement offer waiting for the coordinator's decision."""

    case: CaseState
    settlement_id: str
    details: Mapping[str, Any]


class Coordinator:
    """The key-account manager's commands on cases."""

    def __init__(
        self,
        store: Store,
        partners: PartnerDirectory,
        clock: Clock = utcnow,
        *,
        queries: CaseQueries | None = None,
    ) -> None:
        self.store = store
        self.partners = partners
        self.clock = clock
        if queries is None:  # the store's own: MongoStore and InMemoryStore provide them
            factory = getattr(store, "case_queries", None)
            if factory is None:
                raise TypeError("pass queries=... for a store without case_queries()")
            queries = factory()
        self.queries: CaseQueries = queries

    # -- commands ----------------------------------------------------------------------

    async def reassign(
        self,
        case_id: str,
        *,
        to_partner: str | None = None,
        reason: str = "reassigned by the coordinator",
        actor: str = "coordinator",
    ) -> list[OutMessage]:
        """Take the case back from its partner (if it has one) and place it again: with
        ``to_partner`` when given, else by the routing rules, never with the old partner.
        No fitting partner: the case waits in the ``unassigned`` inbox."""
        profiles = await self.partners.profiles()
        counts = dict(self.partners.open_cases())
        deltas: dict[str, int] = {}

        async def work(tx: Tx) -> Changeset:
            deltas.clear()
            now = self.clock()
            state = await _load(tx, case_id)
            loaded = state.version
            changes = Changeset()
            old = state.partner_id if state.lifecycle in WITH_PARTNER else None
            if old is not None:
                state = self._recall(state, changes, reason=reason, actor=actor, now=now)
                deltas[old] = deltas.get(old, 0) - 1
            elif state.lifecycle not in AWAITING_PLACEMENT:
                raise IllegalTransition(
                    f"case {case_id} is {state.lifecycle.value}; only a case with a partner "
                    "or awaiting placement can be reassigned",
                    case_id=case_id,
                )
            if not state.open_claims:
                raise IllegalTransition(
                    f"case {case_id} has no open claim to place", case_id=case_id
                )
            if to_partner is not None:
                profile = _fit_partner(profiles, to_partner, state, old)
                events = lifecycle.assign(
                    state, profile.partner_id, sla_hours=profile.sla_hours, now=now, actor=actor
                )
                state = _fold(state, events)
                changes.events.extend(events)
                changes.outbox.append(outgoing.assignment(state, now))
            else:
                current = {k: counts.get(k, 0) + deltas.get(k, 0) for k in counts.keys() | deltas}
                exclude = frozenset({old}) if old else frozenset()
                placed = place(state, profiles, current, now, exclude=exclude, actor=actor)
                state = placed.state
                changes.events.extend(placed.events)
                changes.outbox.extend(placed.outbox)
            if state.partner_id is not None:
                deltas[state.partner_id] = deltas.get(state.partner_id, 0) + 1
            changes.cases.append((state, loaded))
            return changes

        changes = await self.store.transact(work)
        self._note(deltas)
        return changes.outbox

    async def recall(
        self, case_id: str, *, reason: str, actor: str = "creditor"
    ) -> list[OutMessage]:
        """The creditor takes the case back; it is not placed again until reassigned."""
        deltas: dict[str, int] = {}

        async def work(tx: Tx) -> Changeset:
            deltas.clear()
            state = await _load(tx, case_id)
            loaded = state.version
            changes = Changeset()
            old = state.partner_id
            state = self._recall(state, changes, reason=reason, actor=actor, now=self.clock())
            if old:
                deltas[old] = -1
            changes.cases.append((state, loaded))
            return changes

        changes = await self.store.transact(work)
        self._note(deltas)
        return changes.outbox

    async def decide_settlement(
        self,
        case_id: str,
        settlement_id: str,
        *,
        approved: bool,
        decided_by: str,
        note: str | None = None,
    ) -> list[OutMessage]:
        """Approve or reject a settlement the case's partner proposed; the partner is told."""
        if not decided_by.strip():
            raise InvalidCommand("a settlement decision needs the name of who decided")

        async def work(tx: Tx) -> Changeset:
            now = self.clock()
            state = await _load(tx, case_id)
            events = lifecycle.decide_settlement(
                state,
                settlement_id,
                approved=approved,
                decided_by=decided_by,
                note=note,
                now=now,
            )
            changes = Changeset(events=list(events), cases=[(_fold(state, events), state.version)])
            if state.partner_id is not None:
                body = m.SettlementDecided(
                    case_id=case_id,
                    settlement_id=settlement_id,
                    decision="approved" if approved else "rejected",
                    decided_by=decided_by[:200],
                    note=note[:2000] if note else None,
                    decided_at=now,
                )
                changes.outbox.append(outgoing.settlement_decided(state.partner_id, body, now))
            return changes

        return (await self.store.transact(work)).outbox

    # -- queries -----------------------------------------------------------------------

    async def overdue(
        self, now: dt.datetime | None = None, *, limit: int = DEFAULT_LIMIT
    ) -> list[CaseState]:
        """Cases assigned whose partner has not accepted them by their SLA deadline."""
        return await self.queries.overdue(now or self.clock(), limit)

    async def pending_settlements(
        self, *, limit: int = DEFAULT_LIMIT
    ) -> list[tuple[str, dict[str, Any]]]:
        """(case id, settlement) for every settlement waiting for a decision. Each
        settlement dict is the proposal plus the case's ``partner_id``, ``case_total``,
        ``collected`` and ``country``."""
        return [(s.case.case_id, dict(s.details)) for s in await self.settlements(limit=limit)]

    async def settlements(self, *, limit: int = DEFAULT_LIMIT) -> list[Settlement]:
        out: list[Settlement] = []
        for state in await self.queries.with_pending_settlements(limit):
            for sid, proposal in sorted(state.pending_settlements.items()):
                details = {
                    **proposal,
                    "settlement_id": sid,
                    "partner_id": state.partner_id,
                    "case_total": str(state.total),
                    "collected": state.collected,
                    "country": state.country,
                }
                out.append(Settlement(state, sid, details))
        return out

    async def show(
        self, case_id: str, as_of: dt.datetime | None = None, axis: str = "recorded"
    ) -> tuple[CaseState | None, list[Event]]:
        """The case and its timeline; with ``as_of``, as the hub knew it then
        (``axis="recorded"``) or as it stood by what had happened then (``"occurred"``)."""
        if axis not in ("recorded", "occurred"):
            raise InvalidCommand(f"axis must be 'recorded' or 'occurred', not {axis!r}")
        events = await self.store.events(case_id)
        if as_of is None:
            return fold(events), events
        chosen = [
            e for e in events if (e.recorded_at if axis == "recorded" else e.occurred_at) <= as_of
        ]
        return state_as_of(events, as_of, axis=axis), chosen

    async def find(self, query: str, *, limit: int = 50) -> list[CaseState]:
        """Cases by case id, invoice number, or the beginning of the debtor's name."""
        return await self.queries.find(query, limit)

    async def list_cases(
        self,
        *,
        lifecycle: str | None = None,
        partner_id: str | None = None,
        country: str | None = None,
        limit: int = 50,
    ) -> list[CaseState]:
        if lifecycle is not None and lifecycle not in {lc.value for lc in Lifecycle}:
            raise InvalidCommand(
                f"status must be one of {', '.join(lc.value for lc in Lifecycle)}, "
                f"not {lifecycle!r}"
            )
        return await self.queries.list(
            lifecycle=lifecycle, partner_id=partner_id, country=country, limit=limit
        )

    # -- helpers -----------------------------------------------------------------------

    def _recall(
        self, state: CaseState, changes: Changeset, *, reason: str, actor: str, now: dt.datetime
    ) -> CaseState:
        old, assignment = state.partner_id, state.assignment_id
        events = lifecycle.recall(state, reason=reason, now=now, actor=actor)
        changes.events.extend(events)
        if old is not None and assignment is not None:
            changes.outbox.append(outgoing.recalled(old, state.case_id, assignment, reason, now))
        return _fold(state, events)

    def _note(self, deltas: Mapping[str, int]) -> None:
        for partner_id, n in deltas.items():
            if n:
                self.partners.note_assigned(partner_id, n)


async def _load(tx: Tx, case_id: str) -> CaseState:
    state = (await tx.cases([case_id])).get(case_id)
    if state is None:
        raise UnknownCase(f"there is no case {case_id}", case_id=case_id)
    return state


def _fold(state: CaseState, events: Sequence[Event]) -> CaseState:
    return fold(events, state) or state


def _fit_partner(
    profiles: Sequence[PartnerProfile], partner_id: str, state: CaseState, old: str | None
) -> PartnerProfile:
    """The profile of the partner the coordinator chose, if it can take the case."""
    case_id = state.case_id
    profile = next((p for p in profiles if p.partner_id == partner_id), None)
    if profile is None:
        raise InvalidCommand(f"there is no partner {partner_id}", case_id=case_id)
    if not profile.active:
        raise InvalidCommand(f"partner {partner_id} is not active", case_id=case_id)
    if state.country not in profile.countries:
        raise InvalidCommand(
            f"partner {partner_id} does not cover {state.country} (case {case_id})",
            case_id=case_id,
        )
    if partner_id == old:
        raise InvalidCommand(
            f"case {case_id} is already with partner {partner_id}", case_id=case_id
        )
    return profile
