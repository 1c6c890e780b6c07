"""Crash the hub worker (SIGKILL, twice) while it works through a batch, and prove that
nothing is lost and nothing is done twice: every claim has its receipt, every business
key one claim, every debtor one case, every case one assignment.

The worker is a separate process (``hubctl run``). After a crash the outbox relay may
publish again a message whose publish was not yet marked sent: that is at-least-once
delivery under the SAME message id, which receivers deduplicate. The test counts distinct
AMQP message ids, checks that such copies are byte-identical, and reports how many.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from hub.bootstrap import Hub
from tests.conftest import PartnerFactory
from tests.e2e.batchgen import COUNTRIES, GenMessage, generate
from tests.support import drain

pytestmark = [pytest.mark.services, pytest.mark.e2e]

TOTAL = 2000


async def publish_all(channel: AbstractChannel, exchange: str, messages: list[GenMessage]) -> None:
    """Publish with confirms, many in flight (order does not matter: all are new claims)."""
    ex = await channel.get_exchange(exchange, ensure=False)

    async def one(msg: GenMessage) -> None:
        await ex.publish(
            aio_pika.Message(
                msg.body,
                message_id=msg.message_id,
                type=msg.type,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=msg.type,
        )

    for start in range(0, len(messages), 200):
        await asyncio.gather(*(one(m) for m in messages[start : start + 200]))


def by_message_id(msgs: list[AbstractIncomingMessage]) -> tuple[dict[str, bytes], int]:
    """Distinct messages by AMQP message id, and how many extra copies there were; every
    copy must be byte-identical to the first."""
    first: dict[str, bytes] = {}
    extra = 0
    for m in msgs:
        assert m.message_id, m.body[:200]
        if m.message_id in first:
            assert m.body == first[m.message_id], f"copies of {m.message_id} differ"
            extra += 1
        else:
            first[m.message_id] = m.body
    return first, extra


async def test_worker_killed_twice_mid_batch(
    idle_hub: Hub, idle_partner: PartnerFactory, worker: Any
) -> None:
    hub = idle_hub
    db = hub.store.db
    ns = hub.settings.namespace
    t0 = time.monotonic()
    batch = generate(
        TOTAL,
        batch_id=f"C-{uuid.uuid4().hex[:8]}",
        resends=0,
        amendments=0,
        invalid=0,
        withdrawals=0,
        claims_per_debtor=(3, 10),
        seed=7,
    )
    groups: dict[tuple[str, str], set[str]] = {}
    for msg in batch.messages:
        groups.setdefault((msg.entity, msg.debtor_reg), set()).add(msg.key.split("/", 1)[1])
    countries = sorted(COUNTRIES)
    coverage: dict[str, set[str]] = {}
    plan = [countries[i : i + 3] for i in range(0, len(countries), 3)] + [["DE"], ["US"]]
    for cs in plan:
        pid = await idle_partner(cs)
        for c in cs:
            coverage.setdefault(c, set()).add(pid)
    partners = sorted({p for ps in coverage.values() for p in ps})

    connection = await aio_pika.connect(hub.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await publish_all(channel, f"{ns}claims.in", batch.messages)
        t_published = time.monotonic()

        w = worker(BATCH_MAX="50", BATCH_WAIT_MS="5", OUTBOX_GRACE_S="2", OUTBOX_POLL_S="0.5")

        async def inbox() -> int:
            return await db.inbox.count_documents({})

        async def wait_inbox(at_least: int, within: float) -> int:
            end = time.monotonic() + within
            while time.monotonic() < end:
                proc = w.current
                assert proc is not None and proc.poll() is None, "the worker died by itself"
                n = await inbox()
                if n >= at_least:
                    return n
                await asyncio.sleep(0.05)
            raise AssertionError(f"inbox still below {at_least} after {within} s")

        kills: list[tuple[int, int]] = []  # (inbox count at the kill, receipts then queued)
        w.start()
        for fraction in (0.25, 0.6):
            await wait_inbox(int(TOTAL * fraction), within=120)
            w.kill()
            n = await inbox()
            assert n < TOTAL, f"the worker finished ({n}) before it could be killed"
            queue = await channel.declare_queue(f"{ns}creditor.flexspace", passive=True)
            kills.append((n, queue.declaration_result.message_count or 0))
            w.start()

        # done: every claim in the inbox, the batch reconciled, the outbox all sent
        async def done() -> bool:
            return (
                await inbox() == TOTAL
                and await db.batches.count_documents({}) == 1
                and await db.outbox.count_documents({"sent_at": None}) == 0
            )

        end = time.monotonic() + 180
        while not await done():
            proc = w.current
            assert proc is not None and proc.poll() is None, "the worker died by itself"
            assert time.monotonic() < end, "the batch did not complete within 180 s"
            await asyncio.sleep(0.2)
        t_done = time.monotonic()
        await asyncio.sleep(1.0)  # let the last confirmed publishes reach their queues
        w.kill()

        got = await drain(channel, f"{ns}creditor.flexspace", idle=1.0, limit=60)
        per_partner: dict[str, list[AbstractIncomingMessage]] = {}
        for pid in partners:
            per_partner[pid] = await drain(channel, f"{ns}partner.{pid}", idle=0.2)
        dead = await drain(channel, f"{ns}hub.dead", idle=0.2)

    assert dead == [], [(m.type, m.message_id) for m in dead]

    # receipts: one distinct receipt per claim, copies identical
    receipts_raw = [m for m in got if m.type == "claim.receipt"]
    receipts, receipt_copies = by_message_id(receipts_raw)
    bodies = [json.loads(b) for b in receipts.values()]
    per_claim = Counter(b["claim_message_id"] for b in bodies)
    assert not [k for k, n in per_claim.items() if n > 1], "two receipts for one claim"
    assert set(per_claim) == {m.message_id for m in batch.messages}
    assert Counter(b["status"] for b in bodies) == {"accepted": TOTAL}
    reconciled, reconciled_copies = by_message_id([m for m in got if m.type == "batch.reconciled"])
    assert len(reconciled) == 1
    summary = json.loads(next(iter(reconciled.values())))
    assert (summary["expected"], summary["received"], summary["accepted"]) == (TOTAL,) * 3

    # claims: one document per business key
    claim_ids = [d["_id"] async for d in db.claims.find({}, {"_id": 1})]
    assert len(claim_ids) == TOTAL and set(claim_ids) == {m.key for m in batch.messages}

    # cases: one per (entity, debtor), holding exactly its claims
    docs = await db.cases.find({}).to_list()
    seen: Counter[tuple[str, str]] = Counter(
        (d["creditor_entity"], d["debtor"]["registration_id"]) for d in docs
    )
    assert not [g for g, n in seen.items() if n > 1], "two cases of one debtor"
    assert set(seen) == set(groups)
    for d in docs:
        group = (d["creditor_entity"], d["debtor"]["registration_id"])
        assert set(d["claims"]) == groups[group], group
        assert d["lifecycle"] == "assigned" and d["partner_id"] in coverage[d["country"]]

    # one `assigned` event per case; no other placement events
    kinds: Counter[str] = Counter()
    assigned_events: Counter[str] = Counter()
    async for e in db.events.find({}, {"case_id": 1, "kind": 1}):
        kinds[e["kind"]] += 1
        if e["kind"] == "assigned":
            assigned_events[e["case_id"]] += 1
    assert set(assigned_events) == {d["_id"] for d in docs}
    assert set(assigned_events.values()) == {1}
    assert kinds == {"claim_added": TOTAL, "assigned": len(docs)}, kinds

    # one case.assigned (by distinct message id) per case, in its partner's queue; a claim
    # that joined its case after the assignment came as a case.updated
    assignment_copies = 0
    ids_per_case: dict[str, set[str]] = {}
    partner_of = {d["_id"]: d["partner_id"] for d in docs}
    for pid, msgs in per_partner.items():
        assert {m.type for m in msgs} <= {"case.assigned", "case.updated"}
        distinct, copies = by_message_id([m for m in msgs if m.type == "case.assigned"])
        assignment_copies += copies
        for mid, body in distinct.items():
            doc = json.loads(body)
            ids_per_case.setdefault(doc["case_id"], set()).add(mid)
            assert partner_of[doc["case_id"]] == pid == doc["partner_id"]
    assert set(ids_per_case) == set(partner_of)
    assert {len(v) for v in ids_per_case.values()} == {1}

    print(
        f"\ncrash test: {TOTAL} claims sent (published in {t_published - t0:.1f} s), "
        f"worker killed at inbox {kills[0][0]} and {kills[1][0]} "
        f"(receipts queued then: {kills[0][1]}, {kills[1][1]}), done after "
        f"{t_done - t_published:.1f} s; {len(docs)} cases, {len(receipts)} distinct receipts "
        f"({len(receipts_raw)} delivered), {len(ids_per_case)} assignments; redelivered "
        f"duplicates (same id, identical bytes): {receipt_copies} receipts, "
        f"{assignment_copies} assignments, {reconciled_copies} reconciliations"
    )
