"""Competing consumers: two hub workers consume the same queues at once, and updates to
one case stay consistent (optimistic concurrency: a stale case version or a taken event
number makes the loser retry from fresh reads)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import aio_pika
import pytest

from hub.bootstrap import Hub, start_hub
from hub.config import Settings
from tests.conftest import PartnerFactory
from tests.support import claim_body, drain, eventually, now_iso, publish_json

pytestmark = [pytest.mark.services, pytest.mark.e2e]

DEBTORS = 12
CLAIMS = 240  # 20 claims per debtor: the two workers race on every case
PAYMENTS = 60


@pytest.fixture
async def second_worker(hub: Hub) -> AsyncIterator[Hub]:
    """Another worker on the same queues and database as ``hub``."""
    other = await start_hub(hub.settings)
    try:
        yield other
    finally:
        await other.close()


async def test_two_workers_keep_each_case_consistent(
    hub: Hub, second_worker: Hub, partner: PartnerFactory
) -> None:
    settings: Settings = hub.settings
    ns = settings.namespace
    pid = await partner(["DE"])
    channel = await hub.connection.channel(publisher_confirms=True)

    # 1. Claims against a few debtors, so that both workers write the same cases.
    await asyncio.gather(
        *(
            publish_json(
                channel,
                f"{ns}claims.in",
                "claim.placed",
                claim_body(n, debtor=n % DEBTORS, principal="100.00"),
                type="claim.placed",
            )
            for n in range(CLAIMS)
        )
    )

    async def all_in() -> bool:
        return await hub.store.db.inbox.count_documents({}) == CLAIMS

    await eventually(all_in, within=120)
    both = [c for h in (hub, second_worker) for c in h.consumers if c.name == "claims"]
    assert all(c.processed > 0 for c in both), "both workers consumed claims"

    cases = [d async for d in hub.store.db.cases.find({})]
    assert len(cases) == DEBTORS
    for doc in cases:
        assert len(doc["claims"]) == CLAIMS // DEBTORS  # no claim lost in a race
        events = [e async for e in hub.store.db.events.find({"case_id": doc["_id"]}).sort("seq")]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert doc["version"] == len(events)
        assert sum(e["kind"] == "assigned" for e in events) == 1

    # 2. The partner accepts one case, then pays it in many small parts at once.
    delivered = await drain(channel, f"{ns}partner.{pid}", idle=1.5)
    # claims that joined a case after its assignment came as case.updated
    assert {m.type for m in delivered} <= {"case.assigned", "case.updated"}
    assigned = [m for m in delivered if m.type == "case.assigned"]
    assert len(assigned) == DEBTORS
    case_id = str(assigned[0].correlation_id)
    conn = await aio_pika.connect(f"amqp://{pid}:pw-{pid}@127.0.0.1:5672/")
    try:
        pch = await conn.channel(publisher_confirms=True)
        await publish_json(
            pch,
            f"{ns}partners.in",
            f"{pid}.case.accepted",
            {"case_id": case_id, "occurred_at": now_iso()},
            type="case.accepted",
            user_id=pid,
        )

        async def accepted() -> bool:
            doc = await hub.store.db.cases.find_one({"_id": case_id})
            return doc is not None and doc["lifecycle"] == "accepted"

        await eventually(accepted, within=30)
        await asyncio.gather(
            *(
                publish_json(
                    pch,
                    f"{ns}partners.in",
                    f"{pid}.case.payment",
                    {
                        "case_id": case_id,
                        "amount": "1.25",
                        "currency": "EUR",
                        "reference": f"P{i}",
                        "occurred_at": now_iso(),
                    },
                    type="case.payment",
                    user_id=pid,
                    message_id=uuid.uuid4().hex,
                )
                for i in range(PAYMENTS)
            )
        )
    finally:
        await conn.close()

    async def all_paid() -> bool:
        doc = await hub.store.db.cases.find_one({"_id": case_id})
        return doc is not None and Decimal(doc["collected"]) == Decimal("1.25") * PAYMENTS

    await eventually(all_paid, within=60)
    events = [e async for e in hub.store.db.events.find({"case_id": case_id}).sort("seq")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert sum(e["kind"] == "payment" for e in events) == PAYMENTS
    doc = await hub.store.db.cases.find_one({"_id": case_id})
    assert doc is not None and doc["version"] == len(events)
    print(
        f"two workers: claims {[c.processed for c in both]}, "
        f"transactions retried after a conflict "
        f"{sum(h.store.attempts - h.store.commits for h in (hub, second_worker))}"
    )
