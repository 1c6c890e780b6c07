"""The hub's side of a certification run: the test case, and what the hub recorded.

The certification places its own claim through the hub, as the creditor would (on
``claims.in``, with the hub's broker user), under creditor entity ``CERT-<partner>`` and
a debtor in a test country (default ``AQ``, Antarctica: an ISO country no real partner
serves). The partner's profile is extended to cover that country for the run and put
back afterwards. Should the hub route the claim elsewhere (say a worker whose partner
cache is a few seconds old), the certification reassigns it to the partner under test
as the coordinator would. Cases of entity ``CERT-…`` are test cases: reports should
leave them out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Final, TypeVar

import aio_pika

from hub.bootstrap import Hub
from hub.domain.model import CaseState, Event, Lifecycle, case_id_for
from hub.domain.routing import PartnerProfile
from hub.service.coordinator import Coordinator
from hub.service.ports import OutMessage
from partner_sdk import messages as m
from partner_sdk.codes import COUNTRIES

__all__ = ["CERT_ENTITY_PREFIX", "CertificationHub", "SetupError"]

log = logging.getLogger(__name__)

CERT_ENTITY_PREFIX: Final = "CERT-"
DEFAULT_COUNTRY: Final = "AQ"

T = TypeVar("T")


class SetupError(Exception):
    """The hub cannot run a certification for this partner (the message says why)."""


async def poll(
    probe: Callable[[], Awaitable[T | None]], within: float, interval: float = 0.1
) -> T | None:
    """The first non-None result of ``probe`` within ``within`` seconds, else None."""
    end = time.monotonic() + within
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() >= end:
            return None
        await asyncio.sleep(interval)


class CertificationHub:
    """Set-up and observation of a certification run on a running hub (``Hub``)."""

    def __init__(self, hub: Hub, *, country: str = DEFAULT_COUNTRY) -> None:
        if country not in COUNTRIES:
            raise ValueError(f"{country!r} is not an ISO 3166-1 alpha-2 country")
        self.hub = hub
        self.country = country
        self._original: PartnerProfile | None = None
        self._created = False
        self.partner_id: str | None = None
        self.notes: list[str] = []

    @property
    def db(self) -> Any:
        return self.hub.store.db

    # --- set-up ---------------------------------------------------------------------------

    async def prepare(self, partner_id: str, *, force: bool = False) -> PartnerProfile:
        """Make the partner's profile cover the test country; refuse a live partner
        (one holding real open cases) unless ``force``."""
        self.partner_id = partner_id
        await self.hub.partners.refresh()
        profiles = await self.hub.partners.profiles()
        profile = next((p for p in profiles if p.partner_id == partner_id), None)
        if profile is not None and not profile.active:
            raise SetupError(f"partner {partner_id} is disabled; enable it before certifying")
        live = await self.db.cases.count_documents(
            {
                "partner_id": partner_id,
                "open": True,
                "creditor_entity": {"$not": {"$regex": f"^{CERT_ENTITY_PREFIX}"}},
            }
        )
        if live and not force:
            raise SetupError(
                f"partner {partner_id} holds {live} real open case(s): the certification "
                "would consume its queue. Certify before going live, or pass --force"
            )
        others = sorted(
            p.partner_id
            for p in profiles
            if p.active and self.country in p.countries and p.partner_id != partner_id
        )
        if others:
            self.notes.append(
                f"{', '.join(others)} also cover{'s' if len(others) == 1 else ''} test country "
                f"{self.country}: the case may be routed there first and then reassigned"
            )
        if profile is None:
            self._created = True
            wanted = PartnerProfile(
                partner_id,
                frozenset({self.country}),
                frozenset({m.Phase.AMICABLE}),
                name=f"{partner_id} (certification)",
            )
            self.notes.append(f"partner {partner_id} had no profile: one was created for the run")
        else:
            self._original = profile
            wanted = dataclasses.replace(
                profile,
                countries=profile.countries | {self.country},
                phases=profile.phases | {m.Phase.AMICABLE},
            )
        if wanted != profile:
            await self.hub.partners.upsert(wanted)
        return wanted

    async def restore(self) -> None:
        """Put the partner's profile back as it was before ``prepare``."""
        if self._original is not None:
            await self.hub.partners.upsert(self._original)
        elif self._created and self.partner_id:
            await self.db.partners.delete_one({"_id": self.partner_id})
            await self.hub.partners.refresh()
        self._original, self._created = None, False

    def claim(self, partner_id: str, run_id: str, profile: PartnerProfile) -> m.ClaimPlaced:
        amount = Decimal("100.00")
        if profile.min_amount is not None and amount < profile.min_amount:
            amount = profile.min_amount
        if profile.max_amount is not None and amount > profile.max_amount:
            amount = profile.max_amount
        today = dt.datetime.now(dt.UTC).date()
        return m.ClaimPlaced.model_validate_json(
            json.dumps(
                {
                    "creditor_id": self.hub.settings.creditor_id,
                    "creditor_entity": f"{CERT_ENTITY_PREFIX}{partner_id}",
                    "invoice_number": f"CERT-{run_id}",
                    "invoice_date": (today - dt.timedelta(days=45)).isoformat(),
                    "due_date": (today - dt.timedelta(days=15)).isoformat(),
                    "currency": "EUR",
                    "principal": format(amount, "f"),
                    "interest": "0",
                    "fees": "0",
                    "notes": "OneWindow partner certification: a test claim, not a real debt",
                    "debtor": {
                        "name": f"Certification Debtor {run_id}",
                        "kind": "company",
                        "registration_id": f"CERT-{run_id}",
                        "country": self.country,
                        "address": {
                            "line1": "1 Certification Way",
                            "city": "Testville",
                            "country": self.country,
                        },
                    },
                }
            )
        )

    @staticmethod
    def case_id_of(claim: m.ClaimPlaced) -> str:
        return case_id_for(claim.creditor_entity, claim.debtor.model_dump())

    async def place(self, claim: m.ClaimPlaced, run_id: str) -> str:
        """Publish the claim on ``claims.in`` as the creditor; returns its case id."""
        async with self.hub.connection.channel(publisher_confirms=True) as channel:
            exchange = await channel.get_exchange(self.hub.topology.claims_in, ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    claim.to_json(),
                    message_id=f"cert:{claim.creditor_entity}:{run_id}",
                    type=m.ClaimPlaced.TYPE,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=m.ClaimPlaced.TYPE,
            )
        return self.case_id_of(claim)

    async def ensure_assigned(self, case_id: str, partner_id: str, within: float) -> CaseState:
        """Wait until the hub has placed the case; reassign it to ``partner_id`` if it went
        elsewhere (or nowhere). ``SetupError`` if it cannot be done in time."""

        async def placed() -> CaseState | None:
            state = await self.case(case_id)
            if state is None or state.lifecycle is Lifecycle.NEW:
                return None
            return state

        state = await poll(placed, within)
        if state is None:
            raise SetupError(
                f"the hub did not take the certification claim (case {case_id}) within "
                f"{within:g} s: is a hub worker running on this namespace?"
            )
        if state.partner_id == partner_id and state.lifecycle is Lifecycle.ASSIGNED:
            return state
        self.notes.append(
            f"the hub left case {case_id} {state.lifecycle.value}"
            + (f" with {state.partner_id}" if state.partner_id else "")
            + f"; reassigned to {partner_id}"
        )
        coordinator = Coordinator(self.hub.store, self.hub.partners)
        await self.hub.partners.refresh()
        out = await coordinator.reassign(
            case_id, to_partner=partner_id, reason="certification", actor="certification"
        )
        await self._publish(out)
        state = await self.case(case_id)
        assert state is not None
        return state

    async def cleanup(self, case_id: str) -> None:
        """Take a certification case that is still open back from the partner."""
        state = await self.case(case_id)
        if state is None or state.lifecycle not in (
            Lifecycle.ASSIGNED,
            Lifecycle.ACCEPTED,
            Lifecycle.IN_PROGRESS,
            Lifecycle.ON_HOLD,
        ):
            return
        coordinator = Coordinator(self.hub.store, self.hub.partners)
        out = await coordinator.recall(
            case_id, reason="certification run ended", actor="certification"
        )
        await self._publish(out)

    async def _publish(self, out: list[OutMessage]) -> None:
        if not out:
            return
        try:
            confirmed = await self.hub.publisher.publish(out)
            await self.hub.store.mark_sent(confirmed)
        except Exception as e:  # the outbox keeps them for a worker's relay
            log.warning("certification: publishing %d message(s) failed: %r", len(out), e)

    # --- observation ----------------------------------------------------------------------

    async def case(self, case_id: str) -> CaseState | None:
        return await self.hub.store.case(case_id)

    async def wait_case(
        self, case_id: str, check: Callable[[CaseState], bool], within: float
    ) -> CaseState | None:
        async def probe() -> CaseState | None:
            state = await self.case(case_id)
            return state if state is not None and check(state) else None

        return await poll(probe, within)

    async def event_of(self, case_id: str, message_id: str, within: float) -> Event | None:
        """The event the hub recorded for the partner's message ``message_id``."""

        async def probe() -> Event | None:
            events = await self.hub.store.events(case_id)
            return next((e for e in events if e.message_id == message_id), None)

        return await poll(probe, within)

    async def document(self, case_id: str, sha256: str, within: float) -> Mapping[str, Any] | None:
        """The GridFS file of the case with content ``sha256``."""

        async def probe() -> Mapping[str, Any] | None:
            files = await self.hub.documents.list_for_case(case_id)
            return next(
                (f for f in files if (f.get("metadata") or {}).get("sha256") == sha256), None
            )

        return await poll(probe, within)

    async def rejection(self, message_id: str) -> bool:
        """Whether the hub recorded a refusal of ``message_id``."""
        found: int = await self.db.rejections.count_documents({"message_id": message_id})
        return found > 0

    async def quarantined(self, entry_id: str, within: float) -> Mapping[str, Any] | None:
        async def probe() -> Mapping[str, Any] | None:
            doc: Mapping[str, Any] | None = await self.db.quarantine.find_one({"_id": entry_id})
            return doc

        return await poll(probe, within)
